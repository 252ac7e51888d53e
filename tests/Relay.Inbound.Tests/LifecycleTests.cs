// Server lifecycle and logging: graceful stop with a message in flight, port 0, log lines.
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Relay.Inbound.Tests.Harness;

namespace Relay.Inbound.Tests;

public sealed class LifecycleTests
{
    [Fact]
    public async Task Stop_lets_a_message_in_flight_finish_then_closes_with_421()
    {
        var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync("Subject: in flight\r\n\r\n");

        var stop = server.Server.StopAsync(CancellationToken.None);
        await client.SendRawAsync("body\r\n.\r\n");
        await client.ExpectAsync(250);
        await client.ExpectAsync(SmtpReplies.ShuttingDown("relay.test"));
        Assert.True(await client.IsClosedAsync());
        await stop;
        Assert.Single(server.Spool.Committed);
        await server.DisposeAsync();
    }

    [Fact]
    public async Task Several_listeners_bind_port_zero_and_report_their_real_ports()
    {
        var settings = TestSettings.Create(null, TestSettings.Listener("a"), TestSettings.Listener("b", requireAuth: true));
        await using var server = await TestServer.StartAsync(settings);
        var a = server.PortOf("a");
        var b = server.PortOf("b");
        Assert.NotEqual(0, a);
        Assert.NotEqual(a, b);
        await using var client = await RawSmtpClient.GreetedAsync(b);
        await client.CommandAsync("MAIL FROM:<x@local.test>", SmtpReplies.AuthRequired); // listener b's own setting
    }

    [Fact]
    public async Task A_queued_message_is_logged_with_its_queue_id_first()
    {
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Information));
        var spool = new MemorySpool();
        var classifier = new TestClassifier();
        await using var server = new InboundServer(TestSettings.Create(), spool, factory, classify: classifier.Classify);
        await server.StartAsync(CancellationToken.None);
        await using (var client = await RawSmtpClient.GreetedAsync(server.EndPoints[0].EndPoint.Port))
        {
            await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
            await client.CommandAsync("RCPT TO:<b@local.test>", 250);
            await client.CommandAsync("DATA", 354);
            await client.SendRawAsync("Subject: x\r\n\r\nsecret body\r\n.\r\n");
            await client.ExpectAsync(250);
            await client.CommandAsync("QUIT", 221);
        }

        var id = spool.Single().Envelope.Id;
        await Eventually.TrueAsync(() => logs.Lines.Any(l => l.StartsWith("disconnect from 127.0.0.1")));
        Assert.Contains(logs.Lines, l => l.StartsWith($"{id}: from=<a@local.test>, size=") && l.Contains("nrcpt=1"));
        Assert.DoesNotContain(logs.Lines, l => l.Contains("secret body"));
    }

    private sealed class CapturingLoggerProvider : ILoggerProvider, ILogger
    {
        public ConcurrentQueue<string> Lines { get; } = new();
        public ILogger CreateLogger(string categoryName) => this;
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Enqueue(formatter(state, exception));
        public void Dispose() { }
    }
}
