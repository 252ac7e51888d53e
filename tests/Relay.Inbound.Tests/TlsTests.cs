// STARTTLS and AUTH-over-TLS rules, driven with raw sockets.
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Relay.Config.Settings;
using Relay.Inbound.Tests.Harness;

namespace Relay.Inbound.Tests;

public sealed class TlsTests
{
    private static readonly SessionSettings WithUsers = new()
    {
        Relay = new RelayControlSettings { Users = new Dictionary<string, string> { ["app1"] = "s3cret" } },
    };

    [Fact]
    public async Task After_StartTls_the_session_starts_over_and_StartTls_is_not_offered_again()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(null, TestSettings.Listener(tls: true)));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("STARTTLS", SmtpReplies.ReadyToStartTls);
        await client.UpgradeToTlsAsync();

        await client.CommandAsync("MAIL FROM:<a@local.test>", SmtpReplies.EhloFirst); // RFC 3207: EHLO again
        await client.SendAsync("EHLO client.test");
        var ehlo = await client.ReadReplyAsync();
        Assert.DoesNotContain("250-STARTTLS", ehlo);
        await client.CommandAsync("STARTTLS", SmtpReplies.AlreadyTls);
    }

    [Fact]
    public async Task Commands_pipelined_after_StartTls_are_discarded_not_run_inside_tls()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(null, TestSettings.Listener(tls: true)));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.SendRawAsync("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
        await client.ExpectAsync(SmtpReplies.ReadyToStartTls);
        Assert.False(client.HasPendingInput);
        await client.UpgradeToTlsAsync();

        await client.CommandAsync("EHLO client.test", 250);
        // Had the injected MAIL survived, this would be 503 "Sender already specified".
        await client.CommandAsync("MAIL FROM:<real@local.test>", SmtpReplies.SenderOk);
    }

    [Fact]
    public async Task StartTls_without_a_certificate_is_not_offered_and_not_implemented()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.ConnectAsync(server.Port);
        await client.ExpectAsync(220);
        await client.SendAsync("EHLO client.test");
        Assert.DoesNotContain("250-STARTTLS", await client.ReadReplyAsync());
        await client.CommandAsync("STARTTLS", SmtpReplies.NotImplemented);
    }

    [Fact]
    public async Task A_failed_handshake_closes_the_connection_and_the_server_goes_on()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(null, TestSettings.Listener(tls: true)));
        await using (var client = await RawSmtpClient.GreetedAsync(server.Port))
        {
            await client.CommandAsync("STARTTLS", SmtpReplies.ReadyToStartTls);
            await client.SendRawAsync("this is not a TLS ClientHello\r\n\r\n");
            Assert.True(await client.IsClosedAsync());
        }

        await using var next = await RawSmtpClient.GreetedAsync(server.Port);
        await next.CommandAsync("NOOP", SmtpReplies.Ok);
    }

    [Fact]
    public async Task Auth_is_offered_on_loopback_without_tls()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(WithUsers));
        await using var client = await RawSmtpClient.ConnectAsync(server.Port);
        await client.ExpectAsync(220);
        await client.SendAsync("EHLO client.test");
        Assert.Contains("250-AUTH PLAIN LOGIN", await client.ReadReplyAsync());
        var plain = Convert.ToBase64String(Encoding.UTF8.GetBytes("\0app1\0s3cret"));
        await client.CommandAsync("AUTH PLAIN " + plain, SmtpReplies.AuthOk);
        await client.CommandAsync("AUTH PLAIN " + plain, SmtpReplies.AlreadyAuthenticated);
    }

    [Fact]
    public async Task Auth_before_tls_from_a_non_loopback_address_is_refused_and_allowed_after_StartTls()
    {
        // Tests stay on loopback, so the server is told to treat its loopback client as remote.
        var listener = TestSettings.Listener(tls: true);
        await using var server = await TestServer.StartAsync(TestSettings.Create(WithUsers, listener));
        server.Server.LoopbackIsLocal = false;
        await using var client = await RawSmtpClient.ConnectAsync(server.Port);
        await client.ExpectAsync(220);
        await client.SendAsync("EHLO client.test");
        Assert.DoesNotContain(await client.ReadReplyAsync(), l => l.Contains("AUTH"));
        var plain = Convert.ToBase64String(Encoding.UTF8.GetBytes("\0app1\0s3cret"));
        await client.CommandAsync("AUTH PLAIN " + plain, SmtpReplies.EncryptionRequired);

        await client.CommandAsync("STARTTLS", SmtpReplies.ReadyToStartTls);
        await client.UpgradeToTlsAsync();
        await client.SendAsync("EHLO client.test");
        Assert.Contains("250-AUTH PLAIN LOGIN", await client.ReadReplyAsync());
        await client.CommandAsync("AUTH PLAIN " + plain, SmtpReplies.AuthOk);
    }

    [Fact]
    public async Task Auth_login_challenges_cancel_and_bad_base64()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(WithUsers));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        Assert.EndsWith("VXNlcm5hbWU6", await client.CommandAsync("AUTH LOGIN", 334));
        await client.CommandAsync("*", SmtpReplies.AuthCancelled);
        await client.CommandAsync("AUTH PLAIN !!!notbase64", SmtpReplies.AuthBadBase64);
        await client.CommandAsync("AUTH CRAM-MD5", SmtpReplies.AuthMechanismUnknown);
        await client.CommandAsync("AUTH LOGIN " + B64("app1"), 334);
        await client.CommandAsync(B64("nope"), SmtpReplies.AuthFailed);
        await client.CommandAsync("AUTH LOGIN", 334);
        await client.CommandAsync(B64("app1"), 334);
        await client.CommandAsync(B64("s3cret"), SmtpReplies.AuthOk);

        static string B64(string s) => Convert.ToBase64String(Encoding.UTF8.GetBytes(s));
    }
}
