// Connections and limits: reuse across messages, per-host connection cap, idle timeout, messages per connection,
// rate limits that defer, STARTTLS policy, smart-host routes, and the log line of each attempt.
using System.Net;
using Relay.Scheduler;

namespace Relay.Delivery.Tests;

public sealed class ConnectionTests : IAsyncLifetime
{
    private readonly World _world = new();
    private TestSmtpServer _mx = null!;

    public Task InitializeAsync()
    {
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        _mx = _world.Server("127.0.0.2");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _world.DisposeAsync();

    private Task<IReadOnlyList<RecipientOutcome>> Send(DeliveryAgent agent, string rcpt = "a@remote.test") =>
        agent.DeliverAsync(_world.Request("remote.test", World.Message(), rcpt), default);

    [Fact]
    public async Task Two_messages_to_the_same_host_share_one_connection()
    {
        var agent = _world.Agent();

        await Send(agent, "a@remote.test");
        await Send(agent, "b@remote.test");

        Assert.Equal(2, _mx.Messages.Count);
        Assert.Equal(1, _mx.Connections);
        Assert.Single(_mx.Messages.Select(m => m.Connection).Distinct());
        Assert.Single(_mx.Commands, c => c.StartsWith("EHLO relay.example.test"));
    }

    [Fact]
    public async Task A_connection_is_closed_after_max_messages_per_connection()
    {
        var agent = _world.Agent(new DeliveryOptions { MaxMessagesPerConnection = 2 });

        for (var i = 0; i < 3; i++) await Send(agent);

        Assert.Equal(3, _mx.Messages.Count);
        Assert.Equal(2, _mx.Connections);
    }

    [Fact]
    public async Task An_idle_connection_is_not_reused_after_the_idle_timeout()
    {
        var agent = _world.Agent(new DeliveryOptions { IdleTimeout = TimeSpan.FromSeconds(10) });

        await Send(agent);
        _world.Clock.Advance(TimeSpan.FromSeconds(11));
        await Send(agent);

        Assert.Equal(2, _mx.Connections);
        // The stale connection is closed (QUIT) without being waited for: poll for the server to read it.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (!_mx.Commands.Contains("QUIT") && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.Contains("QUIT", _mx.Commands);
    }

    [Fact]
    public async Task A_pooled_connection_the_server_closed_is_replaced_without_failing_the_message()
    {
        var agent = _world.Agent();
        await Send(agent);
        await _mx.DisposeAsync();                       // the remote goes away, with our idle connection
        var again = _world.Server("127.0.0.2");         // and comes back on the same address

        var outcome = Assert.Single(await Send(agent));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Single(again.Messages);
    }

    [Fact]
    public async Task Concurrent_deliveries_never_open_more_connections_than_the_per_host_limit()
    {
        _mx.DataDelay = TimeSpan.FromMilliseconds(150);
        var agent = _world.Agent(new DeliveryOptions { MaxConnectionsPerHost = 2 });

        var outcomes = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => Send(agent, $"r{i}@remote.test")));

        Assert.All(outcomes, o => Assert.Equal(OutcomeKind.Delivered, Assert.Single(o).Kind));
        Assert.Equal(6, _mx.Messages.Count);
        Assert.True(_mx.MaxConcurrentConnections <= 2, $"{_mx.MaxConcurrentConnections} concurrent connections");
        Assert.True(_mx.Connections <= 2, $"{_mx.Connections} connections opened");
    }

    [Fact]
    public async Task A_rate_limit_defers_messages_over_the_rate_and_lets_them_through_later()
    {
        var agent = _world.Agent(new DeliveryOptions { Rates = new Dictionary<string, RateLimit> { ["remote.test"] = RateLimit.Parse("2/1m") } });

        var first = await Send(agent);
        var second = await Send(agent);
        var held = Assert.Single(await Send(agent));

        Assert.Equal(OutcomeKind.Delivered, Assert.Single(first).Kind);
        Assert.Equal(OutcomeKind.Delivered, Assert.Single(second).Kind);
        Assert.Equal(OutcomeKind.Temporary, held.Kind);
        Assert.Contains("deferred by rate limit", held.Text);
        Assert.Equal(2, _mx.Messages.Count);

        _world.Clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(OutcomeKind.Delivered, Assert.Single(await Send(agent)).Kind);
    }

    [Theory]
    [InlineData("100/1m", 100, 60)]
    [InlineData("5/s", 5, 1)]
    [InlineData("10/30s", 10, 30)]
    [InlineData("1/1h", 1, 3600)]
    public void Rates_parse_as_count_per_duration(string text, int count, int seconds) =>
        Assert.Equal(new RateLimit(count, TimeSpan.FromSeconds(seconds)), RateLimit.Parse(text));

    [Theory]
    [InlineData("100")]
    [InlineData("0/1m")]
    [InlineData("x/1m")]
    [InlineData("10/1y")]
    public void Bad_rates_are_rejected(string text) => Assert.False(RateLimit.TryParse(text, out _));

    [Fact]
    public async Task Starttls_is_used_when_offered_even_with_a_certificate_that_does_not_validate()
    {
        _mx.Certificate = TestSmtpServer.SelfSignedCertificate();

        var outcome = Assert.Single(await Send(_world.Agent()));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.True(Assert.Single(_mx.Messages).Tls);
    }

    [Fact]
    public async Task A_require_tls_domain_is_deferred_when_the_certificate_does_not_validate()
    {
        _mx.Certificate = TestSmtpServer.SelfSignedCertificate();
        var agent = _world.Agent(new DeliveryOptions { RequireTls = new HashSet<string> { "remote.test" } });

        var outcome = Assert.Single(await Send(agent));

        Assert.Equal(OutcomeKind.Temporary, outcome.Kind);
        Assert.StartsWith("4.7.", outcome.EnhancedStatus);
        Assert.Empty(_mx.Messages);
    }

    [Fact]
    public async Task A_require_tls_domain_is_deferred_when_starttls_is_not_offered()
    {
        var agent = _world.Agent(new DeliveryOptions { RequireTls = new HashSet<string> { "remote.test" } });

        var outcome = Assert.Single(await Send(agent));

        Assert.Equal((OutcomeKind.Temporary, "4.7.4"), (outcome.Kind, outcome.EnhancedStatus));
        Assert.Empty(_mx.Messages);
    }

    [Fact]
    public async Task A_route_sends_recipients_through_the_named_smart_host_instead_of_mx()
    {
        var smart = _world.Server("127.0.0.6");
        var agent = _world.Agent(new DeliveryOptions
        {
            SmartHosts = new Dictionary<string, SmartHost> { ["provider"] = new("127.0.0.6", _world.Port, SmartHostTls.None) },
            Routes = new Dictionary<string, string> { ["*"] = "provider" },
        });

        var outcome = Assert.Single(await Send(agent));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Single(smart.Messages);
        Assert.Empty(_mx.Messages);
        Assert.Equal(0, _world.Dns.Queries("remote.test", TestDns.MX));
    }

    [Fact]
    public async Task Each_attempt_logs_one_postfix_style_line_per_recipient()
    {
        _mx.RcptReply = a => a.StartsWith("bad") ? "550 5.1.1 no such user" : "250 2.1.5 Ok";
        _world.Clock.Advance(TimeSpan.FromSeconds(3));   // the message arrived three seconds ago

        await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "good@remote.test", "bad@remote.test") with { }, default);

        var lines = _world.Log.Lines.Where(l => l.Contains("to=<")).ToArray();
        Assert.Equal(2, lines.Length);
        Assert.Matches(@"^M\d{4}: to=<good@remote\.test>, relay=mx\.remote\.test\[127\.0\.0\.2\]:\d+, delay=\d+(\.\d+)?, dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued\)$", lines[0]);
        Assert.Matches(@"^M\d{4}: to=<bad@remote\.test>, relay=mx\.remote\.test\[127\.0\.0\.2\]:\d+, delay=\d+(\.\d+)?, dsn=5\.1\.1, status=bounced \(550 5\.1\.1 no such user \(in reply to RCPT TO command\)\)$", lines[1]);
    }
}
