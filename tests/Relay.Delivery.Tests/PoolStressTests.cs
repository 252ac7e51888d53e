// Many deliveries at once over pooled connections to two hosts, with per-recipient 2xx/4xx/5xx: each message
// arrives byte for byte with exactly its accepted recipients, every outcome matches the server's reply, and no
// host ever sees more connections than MaxConnectionsPerHost (a connection closed at its message limit once
// freed its slot before its QUIT was done, so the remote briefly saw one more).
using System.Collections.Concurrent;
using System.Text;
using Relay.Scheduler;

namespace Relay.Delivery.Tests;

public sealed class PoolStressTests : IAsyncLifetime
{
    private readonly World _world = new();
    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _world.DisposeAsync();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Concurrent_deliveries_over_pooled_connections_never_mix_and_never_exceed_the_host_limit(bool pipelining)
    {
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        _world.Dns.Mx("other.test", (10, "mx.other.test")).Address("mx.other.test", "127.0.0.3");
        var a = _world.Server("127.0.0.2"); a.Pipelining = pipelining; a.Dsn = true;
        var b = _world.Server("127.0.0.3"); b.Pipelining = pipelining;
        Func<string, string> reply = r => r[0] == 't' ? "451 4.7.1 later" : r[0] == 'p' ? "550 5.1.1 no" : "250 2.1.5 Ok";
        a.RcptReply = reply; b.RcptReply = reply;
        var agent = _world.Agent(new DeliveryOptions { CommandTimeout = TimeSpan.FromSeconds(10), MaxConnectionsPerHost = 3, MaxMessagesPerConnection = 4 });
        var failures = new ConcurrentQueue<string>();
        var sent = new ConcurrentDictionary<string, byte[]>();
        var expectedDelivered = new ConcurrentDictionary<string, bool>();
        await Task.WhenAll(Enumerable.Range(0, 8).Select(k => Task.Run(async () =>
        {
            var rnd = new Random(k);
            for (var n = 0; n < 30; n++)
            {
                var domain = rnd.Next(2) == 0 ? "remote.test" : "other.test";
                var subject = $"s{k}-{n}";
                var rcpts = Enumerable.Range(0, rnd.Next(1, 4)).Select(i => $"{"uutp"[rnd.Next(4)]}{i}-{subject}@{domain}").ToArray();
                var content = World.Message(subject, string.Concat(Enumerable.Repeat($"{subject} line\r\n", rnd.Next(1, 3000))));
                sent[subject] = content;
                var outcomes = await agent.DeliverAsync(_world.Request(domain, content, rcpts), default);
                if (outcomes.Count != rcpts.Length) failures.Enqueue($"{subject}: {outcomes.Count} outcomes for {rcpts.Length}");
                foreach (var r in rcpts)
                {
                    var o = outcomes.Single(x => x.Address == r);
                    var want = r[0] == 't' ? OutcomeKind.Temporary : r[0] == 'p' ? OutcomeKind.Permanent : OutcomeKind.Delivered;
                    if (o.Kind != want) failures.Enqueue($"{subject} {r}: {o.Kind} {o.Code} {o.Text}");
                    if (o.Kind == OutcomeKind.Delivered) expectedDelivered[subject + "|" + r] = true;
                }
            }
        })));
        Assert.Empty(failures);
        var stored = new Dictionary<string, int>();
        foreach (var m in a.Messages.Concat(b.Messages))
        {
            var text = Encoding.UTF8.GetString(m.Content);
            var subject = text[(text.IndexOf("Subject: ") + 9)..text.IndexOf("\r\n", text.IndexOf("Subject: "))];
            Assert.Equal(sent[subject], m.Content);
            foreach (var r in m.RcptTo)
            {
                var addr = r[(r.IndexOf('<') + 1)..r.IndexOf('>')];
                stored[subject + "|" + addr] = stored.GetValueOrDefault(subject + "|" + addr) + 1;
            }
        }
        Assert.Equal(expectedDelivered.Keys.Order(), stored.Keys.Order());
        Assert.All(stored.Values, v => Assert.Equal(1, v));
        Assert.InRange(a.MaxConcurrentConnections, 1, 3);
        Assert.InRange(b.MaxConcurrentConnections, 1, 3);
    }

    [Fact]
    public async Task Expired_idle_connections_are_closed_within_the_host_limit()
    {
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        var mx = _world.Server("127.0.0.2");
        mx.DataDelay = TimeSpan.FromMilliseconds(50);   // three deliveries at once: three connections
        mx.QuitDelay = TimeSpan.FromMilliseconds(200);  // a slow goodbye: closing connections stay open a while
        var agent = _world.Agent(new DeliveryOptions { CommandTimeout = TimeSpan.FromSeconds(10), MaxConnectionsPerHost = 3, IdleTimeout = TimeSpan.FromSeconds(10) });
        Task Send(int i) => agent.DeliverAsync(_world.Request("remote.test", World.Message($"m{i}"), $"u{i}@remote.test"), default);

        _world.Clock.Advance(TimeSpan.FromSeconds(5));   // the idle sweep runs at +10 s, +20 s, …
        await Task.WhenAll(Enumerable.Range(0, 3).Select(Send));
        Assert.Equal(3, mx.Connections);
        _world.Clock.Advance(TimeSpan.FromSeconds(5));   // +10 s: the sweep finds them fresh
        _world.Clock.Advance(TimeSpan.FromSeconds(6));   // +16 s: all three expired, and no sweep before +20 s

        // The first delivery meets all three expired ones; the others must not open theirs while those still QUIT.
        await Task.WhenAll(Enumerable.Range(3, 6).Select(Send));
        Assert.Equal(9, mx.Messages.Count);
        Assert.InRange(mx.MaxConcurrentConnections, 1, 3);
    }
}
