// RelayWorld: a whole relay on loopback — the real config loader, spool, scheduler, SMTP
// listener, delivery and DSN stages — plus the remote side: a DNS responder and SMTP servers on
// 127.0.0.x sharing one port (the relay's [delivery] port).
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Config;
using Relay.Delivery.Tests;

namespace Relay.EndToEnd.Tests;

public sealed class RelayWorld : IAsyncDisposable
{
    private readonly TcpListener _portHolder = new(IPAddress.Loopback, 0);
    private readonly List<TestSmtpServer> _servers = [];

    public RelayWorld()
    {
        _portHolder.Start();
        RemotePort = ((IPEndPoint)_portHolder.LocalEndpoint).Port;
        Directory = System.IO.Directory.CreateTempSubdirectory("relay-e2e-");
    }

    public int RemotePort { get; }
    public DirectoryInfo Directory { get; }
    public TestDns Dns { get; } = new();
    public RelayHost? Host { get; private set; }
    public int SmtpPort => Host!.Inbound.EndPoints[0].EndPoint.Port;

    /// <summary>An SMTP server on <paramref name="ip"/> (127.0.0.x) at the relay's delivery port.</summary>
    public TestSmtpServer Remote(string ip)
    {
        var server = new TestSmtpServer(IPAddress.Parse(ip), RemotePort);
        _servers.Add(server);
        return server;
    }

    /// <summary>The config every end-to-end test starts from; <paramref name="extra"/> is appended.</summary>
    public string Config(string extra = "") => $$"""
        [server]
        hostname = "relay.example.test"
        [server.listener.smtp]
        bind = ["127.0.0.1:0"]
        [session.relay]
        networks = ["127.0.0.0/8"]
        [local]
        domains = ["example.test"]
        [spool]
        path = "{{Directory.FullName}}/spool"
        [resolver]
        nameservers = ["{{Dns.EndPoint}}"]
        timeout = "2s"
        [delivery]
        port = {{RemotePort}}
        connect-timeout = "5s"
        [queue.strategy]
        schedule = [ { if = "source == 'dsn'", then = "'dsn'" },
                     { if = "priority >= 6", then = "'urgent'" },
                     { else = "'default'" } ]
        [queue.schedule.urgent]
        retry = ["1s"]
        [queue.schedule.default]
        retry = ["1s"]
        [queue.schedule.dsn]
        retry = ["1s"]
        max-attempts = 5
        [queue.virtual.urgent]
        threads-per-node = 10
        [queue.virtual.default]
        threads-per-node = 10
        [queue.virtual.dsn]
        threads-per-node = 2
        {{extra}}
        """;

    public string WriteConfig(string toml)
    {
        var path = Path.Combine(Directory.FullName, "config.toml");
        File.WriteAllText(path, toml);
        return path;
    }

    public async Task<RelayHost> StartAsync(string? toml = null, ILoggerFactory? loggerFactory = null)
    {
        var result = ConfigLoader.Parse(toml ?? Config(), "e2e.toml", Directory.FullName);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        var settings = result.Settings!;
        loggerFactory ??= NullLoggerFactory.Instance;
        Host = await RelayHost.StartAsync(settings, StageFactory.CreateDeliveryAgent(settings, loggerFactory),
            StageFactory.CreateReports(settings, loggerFactory), loggerFactory);
        return Host;
    }

    public async ValueTask DisposeAsync()
    {
        if (Host is not null) await Host.DisposeAsync();
        foreach (var server in _servers) await server.DisposeAsync();
        await Dns.DisposeAsync();
        _portHolder.Stop();
        try { Directory.Delete(true); } catch (IOException) { }
    }

    /// <summary>Polls <paramref name="condition"/> until true or the timeout (no fixed sleeps).</summary>
    public static async Task WaitUntil(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }
}
