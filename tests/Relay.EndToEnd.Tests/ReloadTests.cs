// Hot reload and graceful shutdown of a whole relay (RelayHost) on loopback: the config file is rewritten and
// ReloadAsync (what SIGHUP and POST /api/reload call) applies it; StopAsync is what SIGTERM runs.
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using MailKit.Net.Smtp;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;
using Relay.Config;
using Relay.Spool;

namespace Relay.EndToEnd.Tests;

public sealed partial class ReloadTests : IAsyncLifetime
{
    private readonly RelayWorld _world = new();
    private readonly List<RelayHost> _hosts = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var host in _hosts) await host.DisposeAsync();
        await _world.DisposeAsync();
    }

    [GeneratedRegex("queued as ([0-9a-f]{16})")]
    private static partial Regex QueuedAs();

    /// <summary>The world's config with a long retry (nothing is retried during a test) and, optionally, delivery held.</summary>
    private string Config(bool hold = true, string extra = "") =>
        _world.Config(extra).Replace("retry = [\"1s\"]", "retry = [\"1h\"]")
            .Replace("connect-timeout = \"5s\"", hold ? "connect-timeout = \"5s\"\nhold = true" : "connect-timeout = \"5s\"");

    private async Task<RelayHost> StartAsync(string toml)
    {
        var path = _world.WriteConfig(toml);
        var loaded = ConfigLoader.LoadFile(path);
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        var settings = loaded.Settings!;
        var host = await RelayHost.StartAsync(settings, StageFactory.CreateDeliveryAgent(settings, NullLoggerFactory.Instance),
            StageFactory.CreateReports(settings, NullLoggerFactory.Instance), NullLoggerFactory.Instance);
        _hosts.Add(host);
        return host;
    }

    private static MimeMessage Message(string to, string subject = "reload")
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse("app@origin.test"));
        message.To.Add(MailboxAddress.Parse(to));
        message.Subject = subject;
        message.Body = new TextPart("plain") { Text = "hello\r\n" };
        return message;
    }

    private static async Task<string> SendAsync(int port, string to)
    {
        using var client = new SmtpClient();
        await client.ConnectAsync("127.0.0.1", port, MailKit.Security.SecureSocketOptions.None);
        var reply = await client.SendAsync(Message(to));
        await client.DisconnectAsync(true);
        return QueuedAs().Match(reply).Groups[1].Value;
    }

    private static int Port(RelayHost host, string listener) => host.Inbound.EndPoints.Single(e => e.Listener == listener).EndPoint.Port;

    private static string ScheduleOf(RelayHost host, string id) => host.Spool.Find(id)!.GetRecipient(0).Schedule;

    [Fact]
    public async Task A_changed_strategy_applies_to_new_mail_while_queued_mail_keeps_its_schedule()
    {
        var host = await StartAsync(Config());
        var before = await SendAsync(Port(host, "smtp"), "a@remote.test");
        Assert.Equal("default", ScheduleOf(host, before));

        // Everything that is not a DSN now goes urgent.
        _world.WriteConfig(Config().Replace("{ if = \"priority >= 6\", then = \"'urgent'\" }", "{ if = \"source == 'smtp'\", then = \"'urgent'\" }"));
        var result = await host.ReloadAsync(CancellationToken.None);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        Assert.Contains("strategy", result.Summary);

        var after = await SendAsync(Port(host, "smtp"), "b@remote.test");
        Assert.Equal("urgent", ScheduleOf(host, after));
        Assert.Equal("default", ScheduleOf(host, before));   // queued mail keeps its schedule (it still exists)
        // The one holder every stage classifies with (SMTP, DSNs, the HTTP API) has the new rules.
        Assert.Equal("urgent", host.Strategy.Classify(new Relay.Config.Strategy.RecipientContext { Recipient = "x@y.test", Source = "smtp" }).Schedule.Name);
        Assert.Equal("dsn", host.Strategy.Classify(new Relay.Config.Strategy.RecipientContext { Recipient = "x@y.test", Source = "dsn" }).Schedule.Name);
    }

    [Fact]
    public async Task Dsns_are_classified_with_the_reloaded_strategy()
    {
        var mx = _world.Remote("127.0.0.2");
        mx.RcptReply = _ => "550 5.1.1 no such user";
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        var host = await StartAsync(Config(hold: false));

        // DSNs now go on the urgent schedule instead of 'dsn'.
        _world.WriteConfig(Config(hold: false).Replace("{ if = \"source == 'dsn'\", then = \"'dsn'\" }", "{ if = \"source == 'dsn'\", then = \"'urgent'\" }"));
        Assert.True((await host.ReloadAsync(CancellationToken.None)).Ok);
        await SendAsync(Port(host, "smtp"), "nobody@remote.test");

        QueuedMessage? dsn = null;
        await RelayWorld.WaitUntil(() =>
        {
            dsn = host.Spool.List(null, 100).FirstOrDefault(m => host.Spool.Find(m.Id) is { } f && f.RecipientCount == 1
                                                                 && m.Recipients[0].Domain == "origin.test");
            return dsn is not null;
        }, TimeSpan.FromSeconds(20), "the failure DSN to the sender");
        Assert.Equal("urgent", dsn!.Recipients[0].Schedule);
    }

    [Fact]
    public async Task A_broken_config_is_refused_with_its_errors_and_the_running_one_keeps_working()
    {
        var host = await StartAsync(Config());
        _world.WriteConfig(Config().Replace("{ else = \"'default'\" }", "{ else = \"'nowhere'\" }") + "\n[session]\nmax-recipients = \"many\"\n");
        var result = await host.ReloadAsync(CancellationToken.None);
        Assert.False(result.Ok);
        Assert.Contains(result.Errors, e => e.Message.Contains("nowhere"));
        Assert.Contains(result.Errors, e => e.Key.Contains("max-recipients"));

        var id = await SendAsync(Port(host, "smtp"), "a@remote.test");
        Assert.Equal("default", ScheduleOf(host, id));   // the old strategy still decides
    }

    [Fact]
    public async Task A_removed_schedule_sends_its_queued_recipients_to_the_fallback()
    {
        var host = await StartAsync(Config(extra: """
            [queue.schedule.newsletter]
            retry = ["1h"]
            queue-name = "default"
            """).Replace("{ if = \"priority >= 6\", then = \"'urgent'\" },", "{ if = \"priority >= 6\", then = \"'urgent'\" }, { if = \"rcpt_domain == 'news.test'\", then = \"'newsletter'\" },"));
        var id = await SendAsync(Port(host, "smtp"), "a@news.test");
        Assert.Equal("newsletter", ScheduleOf(host, id));

        _world.WriteConfig(Config());   // no newsletter schedule any more
        var result = await host.ReloadAsync(CancellationToken.None);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        Assert.Contains("1 queued recipient(s) moved", result.Summary);
        Assert.Equal("default", ScheduleOf(host, id));
    }

    [Fact]
    public async Task Listeners_and_virtual_queues_change_without_dropping_open_sessions()
    {
        var host = await StartAsync(Config(extra: """
            [server.listener.old]
            bind = ["127.0.0.1:0"]
            """));
        var oldPort = Port(host, "old");
        var smtpPort = Port(host, "smtp");
        using var onOld = new SmtpClient();
        await onOld.ConnectAsync("127.0.0.1", oldPort, MailKit.Security.SecureSocketOptions.None);
        using var onSmtp = new SmtpClient();
        await onSmtp.ConnectAsync("127.0.0.1", smtpPort, MailKit.Security.SecureSocketOptions.None);

        // 'old' is removed, 'smtp' moves to another port, 'new' and a virtual queue 'extra' are added.
        var freePort = FreePort();
        _world.WriteConfig(Config(extra: """
            [server.listener.new]
            bind = ["127.0.0.1:0"]
            [queue.virtual.extra]
            threads-per-node = 4
            """).Replace("bind = [\"127.0.0.1:0\"]\n[session.relay]", $"bind = [\"127.0.0.1:{freePort}\"]\n[session.relay]"));
        var result = await host.ReloadAsync(CancellationToken.None);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        Assert.Contains("started new", result.Summary);
        Assert.Contains("stopped old", result.Summary);
        Assert.Contains("rebound smtp", result.Summary);
        Assert.Equal(["new", "smtp"], host.Inbound.EndPoints.Select(e => e.Listener).Order());
        Assert.Equal(freePort, Port(host, "smtp"));
        Assert.Contains(host.Scheduler.GetQueueStats(), q => q is { Name: "extra", ThreadsPerNode: 4 });

        // The new listener and the moved one accept; the sessions opened before the reload still work.
        Assert.Matches("^[0-9a-f]{16}$", await SendAsync(Port(host, "new"), "n@remote.test"));
        Assert.Matches("^[0-9a-f]{16}$", await SendAsync(freePort, "m@remote.test"));
        Assert.Contains("queued as", await onOld.SendAsync(Message("o@remote.test")));
        Assert.Contains("queued as", await onSmtp.SendAsync(Message("s@remote.test")));
        await onOld.DisconnectAsync(true);
        await onSmtp.DisconnectAsync(true);
        // Nobody listens on the removed listener's port any more.
        using var probe = new TcpClient();
        await Assert.ThrowsAsync<SocketException>(() => probe.ConnectAsync(IPAddress.Loopback, oldPort));
    }

    [Fact]
    public async Task Graceful_stop_finishes_the_delivery_in_flight_and_leaves_queued_mail_queued()
    {
        var slow = _world.Remote("127.0.0.2");
        slow.DataDelay = TimeSpan.FromSeconds(1);
        var deferring = _world.Remote("127.0.0.3");
        deferring.RcptReply = _ => "450 4.2.0 mailbox busy";
        _world.Dns.Mx("slow.test", (10, "mx.slow.test")).Address("mx.slow.test", "127.0.0.2");
        _world.Dns.Mx("defer.test", (10, "mx.defer.test")).Address("mx.defer.test", "127.0.0.3");
        var config = Config(hold: false);

        var host = await StartAsync(config);
        var queued = await SendAsync(Port(host, "smtp"), "q@defer.test");
        await RelayWorld.WaitUntil(() => host.Spool.Find(queued)?.GetRecipient(0).Attempts == 1, TimeSpan.FromSeconds(20), "the deferred attempt");
        var inFlight = await SendAsync(Port(host, "smtp"), "s@slow.test");
        await RelayWorld.WaitUntil(() => slow.Commands.Any(c => c.StartsWith("DATA", StringComparison.Ordinal)), TimeSpan.FromSeconds(20), "DATA at the slow MX");

        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await host.StopAsync(grace.Token);
        Assert.Single(slow.Messages);   // finished during the stop, not cut off

        var again = await StartAsync(config);
        await again.Scheduler.Ready.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Null(again.Spool.Find(inFlight));   // recorded as delivered before the stop: nothing to send again
        var waiting = again.Spool.Find(queued)!.GetRecipient(0);
        Assert.Equal((RecipientStatus.Pending, 1), (waiting.Status, waiting.Attempts));   // still queued, as it was
        Assert.Single(slow.Messages);
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
