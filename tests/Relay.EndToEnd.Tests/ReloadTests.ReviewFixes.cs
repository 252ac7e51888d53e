// Reload ordering and reload-vs-shutdown (review findings 11a, 11b); a refused TLS change (#5).
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Relay.EndToEnd.Tests;

public sealed partial class ReloadTests
{
    private static Relay.Config.Strategy.RecipientContext Smtp => new() { Recipient = "x@y.test", Source = "smtp" };

    // 11a: the strategy used to be swapped before the scheduler took the new [queue]; when that failed, new mail was
    // classified with schedules the scheduler never learned.
    [Fact]
    public async Task A_reload_the_scheduler_cannot_take_keeps_the_strategy_in_force()
    {
        var host = await StartAsync(Config());
        Assert.True(await host.Scheduler.DrainAsync(CancellationToken.None));   // the scheduler now refuses reconfiguration

        _world.WriteConfig(Config().Replace("{ if = \"priority >= 6\", then = \"'urgent'\" }", "{ if = \"source == 'smtp'\", then = \"'urgent'\" }"));
        var result = await host.ReloadAsync(CancellationToken.None);

        Assert.False(result.Ok);
        Assert.Contains("stopping", Assert.Single(result.Errors).Message);
        Assert.Equal("default", host.Strategy.Classify(Smtp).Schedule.Name);
        var id = await SendAsync(Port(host, "smtp"), "a@remote.test");
        Assert.Equal("default", ScheduleOf(host, id));
    }

    // 11b: a reload after (or during) shutdown used to run against stopped stages.
    [Fact]
    public async Task A_reload_after_stop_is_refused_and_starts_no_listener()
    {
        var host = await StartAsync(Config());
        _world.WriteConfig(Config().Replace("{ if = \"priority >= 6\", then = \"'urgent'\" }", "{ if = \"source == 'smtp'\", then = \"'urgent'\" }"));
        var reload = host.ReloadAsync(CancellationToken.None);
        await host.StopAsync(CancellationToken.None);   // waits for a reload in progress, then none starts
        Assert.True((await reload).Ok);

        var result = await host.ReloadAsync(CancellationToken.None);
        var error = Assert.Single(result.Errors);
        Assert.Equal("the relay is stopping", error.Message);
        Assert.Empty(host.Inbound.EndPoints);
    }

    // 5: the listener used to be retired before its new certificate was loaded, leaving the port closed.
    [Fact]
    public async Task A_reload_with_a_key_that_does_not_match_keeps_the_tls_listener_accepting_and_says_refused()
    {
        var dir = _world.Directory.FullName;
        using (var key = ECDsa.Create(ECCurve.NamedCurves.nistP256))
        {
            using var cert = new CertificateRequest("CN=relay.example.test", key, HashAlgorithmName.SHA256)
                .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
            File.WriteAllText(Path.Combine(dir, "cert.pem"), cert.ExportCertificatePem());
            File.WriteAllText(Path.Combine(dir, "key.pem"), key.ExportPkcs8PrivateKeyPem());
        }
        using (var other = ECDsa.Create(ECCurve.NamedCurves.nistP256)) File.WriteAllText(Path.Combine(dir, "other-key.pem"), other.ExportPkcs8PrivateKeyPem());
        string WithTls(string keyFile) => Config().Replace("[server.listener.smtp]",
            $"[server.listener.smtp]\ntls = {{ certificate = \"{dir}/cert.pem\", key = \"{dir}/{keyFile}\" }}");
        var host = await StartAsync(WithTls("key.pem"));
        var port = Port(host, "smtp");

        _world.WriteConfig(WithTls("other-key.pem"));
        var result = await host.ReloadAsync(CancellationToken.None);

        Assert.True(result.Ok, string.Join("\n", result.Errors));   // the rest of the config applied
        Assert.Contains("REFUSED smtp:", result.Summary);
        Assert.Equal(port, Port(host, "smtp"));
        using var client = new MailKit.Net.Smtp.SmtpClient { ServerCertificateValidationCallback = (_, _, _, _) => true };
        await client.ConnectAsync("127.0.0.1", port, MailKit.Security.SecureSocketOptions.StartTls);   // the old certificate serves
        Assert.True(client.IsSecure);
        await client.DisconnectAsync(true);
    }
}
