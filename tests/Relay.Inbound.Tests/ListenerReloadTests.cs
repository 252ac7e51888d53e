// A reload that changes a listener's TLS or bind never leaves its port closed: a certificate/key that cannot be
// read or does not match, or a bind that fails, is refused and the running listener keeps accepting (review #5).
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Relay.Config.Settings;
using Relay.Inbound.Tests.Harness;

namespace Relay.Inbound.Tests;

public sealed class ListenerReloadTests
{
    private static RelaySettings WithListener(RelaySettings settings, ListenerSettings listener) =>
        settings with { Server = settings.Server with { Listeners = [listener] } };

    private static async Task AssertAcceptsWithTlsAsync(int port)
    {
        await using var client = await RawSmtpClient.GreetedAsync(port);
        await client.CommandAsync("STARTTLS", SmtpReplies.ReadyToStartTls);
        await client.UpgradeToTlsAsync();   // the old certificate still serves
        await client.SendAsync("EHLO client.test");
        var ehlo = await client.ReadReplyAsync();
        Assert.StartsWith("250", ehlo[0]);
    }

    [Fact]
    public async Task A_key_that_does_not_match_the_certificate_is_refused_and_the_old_listener_keeps_accepting()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a", tls: true));
        await using var server = await TestServer.StartAsync(settings);
        var port = server.PortOf("a");
        var otherKey = Path.Combine(Path.GetDirectoryName(TestCertificate.PemFiles.Key)!, "other-key.pem");
        using (var key = ECDsa.Create(ECCurve.NamedCurves.nistP256)) File.WriteAllText(otherKey, key.ExportPkcs8PrivateKeyPem());
        var changed = new ListenerSettings("a", [new IPEndPoint(IPAddress.Loopback, port)],
            new TlsSettings(TestCertificate.PemFiles.Cert, otherKey), ImplicitTls: false, RequireAuth: false);

        var result = await server.Server.ReconfigureAsync(WithListener(settings, changed), CancellationToken.None);

        var refused = Assert.Single(result.Refused);
        Assert.StartsWith("a: ", refused);
        Assert.Contains("running listener is kept", refused);
        Assert.Empty(result.Rebound);
        Assert.Equal(port, server.PortOf("a"));
        await AssertAcceptsWithTlsAsync(port);
    }

    [Fact]
    public async Task An_unreadable_key_is_refused_and_the_old_listener_keeps_accepting()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a", tls: true));
        await using var server = await TestServer.StartAsync(settings);
        var port = server.PortOf("a");
        var changed = TestSettings.Listener("a", tls: true) with
        {
            Tls = new TlsSettings(TestCertificate.PemFiles.Cert, Path.Combine(Path.GetTempPath(), "no-such-dir-" + Guid.NewGuid(), "key.pem")),
        };

        var result = await server.Server.ReconfigureAsync(WithListener(settings, changed), CancellationToken.None);

        Assert.Single(result.Refused);
        Assert.Equal(port, server.PortOf("a"));
        await AssertAcceptsWithTlsAsync(port);
    }

    [Fact]
    public async Task A_new_bind_on_a_port_in_use_is_refused_and_the_old_listener_keeps_accepting()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a", tls: true));
        await using var server = await TestServer.StartAsync(settings);
        var port = server.PortOf("a");
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var taken = ((IPEndPoint)squatter.LocalEndpoint).Port;
        var changed = TestSettings.Listener("a", tls: true) with { Bind = [new IPEndPoint(IPAddress.Loopback, taken)] };

        var result = await server.Server.ReconfigureAsync(WithListener(settings, changed), CancellationToken.None);

        Assert.StartsWith("a: ", Assert.Single(result.Refused));
        Assert.Equal(port, server.PortOf("a"));
        await AssertAcceptsWithTlsAsync(port);
    }

    [Fact]
    public async Task A_good_tls_change_on_the_same_port_rebinds_it()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a"));
        await using var server = await TestServer.StartAsync(settings);
        var port = server.PortOf("a");
        var changed = TestSettings.Listener("a", tls: true) with { Bind = [new IPEndPoint(IPAddress.Loopback, port)] };

        var result = await server.Server.ReconfigureAsync(WithListener(settings, changed), CancellationToken.None);

        Assert.Empty(result.Refused);
        Assert.Equal(["a"], result.Rebound);
        Assert.Equal(port, server.PortOf("a"));
        await AssertAcceptsWithTlsAsync(port);
    }

    // Review 2, finding 4: a renamed listener takes the port its removed predecessor is leaving.
    [Fact]
    public async Task A_renamed_listener_on_the_same_port_takes_it_over()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a", tls: true));
        await using var server = await TestServer.StartAsync(settings);
        var port = server.PortOf("a");
        var renamed = TestSettings.Listener("b", tls: true) with { Bind = [new IPEndPoint(IPAddress.Loopback, port)] };

        var result = await server.Server.ReconfigureAsync(WithListener(settings, renamed), CancellationToken.None);

        Assert.Empty(result.Refused);
        Assert.Equal(["b"], result.Started);
        Assert.Equal(["a"], result.Stopped);
        Assert.Equal(port, server.PortOf("b"));
        await AssertAcceptsWithTlsAsync(port);
    }

    // Review 2, finding 4: when the added listener cannot bind after all, the removed one comes back on its port.
    [Fact]
    public async Task A_renamed_listener_that_cannot_bind_brings_the_removed_one_back()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a", tls: true));
        await using var server = await TestServer.StartAsync(settings);
        var port = server.PortOf("a");
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var taken = ((IPEndPoint)squatter.LocalEndpoint).Port;
        var renamed = TestSettings.Listener("b", tls: true) with
        {
            Bind = [new IPEndPoint(IPAddress.Loopback, port), new IPEndPoint(IPAddress.Loopback, taken)],
        };

        var result = await server.Server.ReconfigureAsync(WithListener(settings, renamed), CancellationToken.None);

        Assert.Contains("listener a was restored", Assert.Single(result.Refused));
        Assert.Empty(result.Stopped);
        Assert.Equal(port, server.PortOf("a"));
        await AssertAcceptsWithTlsAsync(port);
    }

    // Review 2, finding 7: the restore uses the certificate the old listener had, not its files (gone meanwhile).
    [Fact]
    public async Task A_failed_rebind_restores_the_old_listener_even_when_its_certificate_files_are_gone()
    {
        var dir = Directory.CreateTempSubdirectory("relay-cert-");
        var cert = Path.Combine(dir.FullName, "cert.pem");
        var key = Path.Combine(dir.FullName, "key.pem");
        File.Copy(TestCertificate.PemFiles.Cert, cert);
        File.Copy(TestCertificate.PemFiles.Key, key);
        var old = TestSettings.Listener("a", tls: true) with { Tls = new TlsSettings(cert, key) };
        var settings = TestSettings.Create(null, old);
        await using var server = await TestServer.StartAsync(settings);
        var port = server.PortOf("a");
        dir.Delete(recursive: true);
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var taken = ((IPEndPoint)squatter.LocalEndpoint).Port;
        var changed = TestSettings.Listener("a", tls: true) with
        {
            Bind = [new IPEndPoint(IPAddress.Loopback, port), new IPEndPoint(IPAddress.Loopback, taken)],
        };

        var result = await server.Server.ReconfigureAsync(WithListener(settings, changed), CancellationToken.None);

        Assert.Contains("previous listener settings were restored", Assert.Single(result.Refused));
        Assert.Equal(port, server.PortOf("a"));
        await AssertAcceptsWithTlsAsync(port);
    }

    // Review 2, finding 11: once stopped, a reload (still running in the host) opens no listener.
    [Fact]
    public async Task A_reconfigure_after_stop_is_refused()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a"));
        await using var server = await TestServer.StartAsync(settings);
        await server.Server.StopAsync(CancellationToken.None);
        await Assert.ThrowsAsync<InvalidOperationException>(() =>
            server.Server.ReconfigureAsync(TestSettings.Create(null, TestSettings.Listener("b")), CancellationToken.None));
        Assert.Empty(server.Server.EndPoints);
    }
}
