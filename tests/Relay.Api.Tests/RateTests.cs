using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Time.Testing;
using Relay.Api.Tests.Harness;
using Relay.Scheduler;

namespace Relay.Api.Tests;

/// <summary>[api.client.NAME] rate: "hold" (default) queues and releases at the rate; "reject" answers 429.</summary>
public sealed class RateTests
{
    private const string Clients = """
        [api.client.held]
        token = "held-token"
        rate = "2/1m"
        [api.client.limited]
        token = "limited-token"
        rate = "2/1m"
        rate-policy = "reject"
        """;

    private static string Message(int n) => $$"""{ "from": "a@app.test", "to": "r{{n}}@remote.test", "text": "message {{n}}" }""";

    [Fact]
    public async Task Over_a_reject_rate_the_client_gets_429_with_retry_after_and_nothing_is_queued()
    {
        await using var h = await ApiHarness.StartAsync(Clients);
        await h.SubmitAsync(Message(1), "limited-token");
        await h.SubmitAsync(Message(2), "limited-token");
        using var third = await h.PostAsync(Message(3), "limited-token");
        Assert.Equal(HttpStatusCode.TooManyRequests, third.StatusCode);
        Assert.Equal("application/problem+json", third.Content.Headers.ContentType!.MediaType);
        var retryAfter = third.Headers.RetryAfter!.Delta!.Value;
        Assert.InRange(retryAfter, TimeSpan.FromSeconds(25), TimeSpan.FromSeconds(30));
        Assert.Equal(2, h.Spool.Count);
        Assert.Equal(2, h.StoredMessages);
        // Other clients are not limited by it.
        await h.SubmitAsync(Message(4));
    }

    [Fact]
    public async Task Over_a_hold_rate_mail_is_accepted_at_once_and_delivered_at_the_rate()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 12, 0, 0, TimeSpan.Zero));
        await using var h = await ApiHarness.StartAsync(Clients, clock);
        var agent = new RecordingAgent(clock);
        await using var scheduler = new QueueScheduler(h.Spool, h.Settings.Queue, agent, new NoDeliveryReports(), clock);
        scheduler.Start();
        await scheduler.Ready;
        var start = clock.GetUtcNow();

        var responses = new List<System.Text.Json.Nodes.JsonNode>();
        for (var n = 1; n <= 5; n++)
        {
            using var response = await h.PostAsync(Message(n), "held-token");
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);   // never 429 under hold
            responses.Add(await ApiHarness.JsonAsync(response));
        }
        Assert.Equal(5, h.Events.Accepted.Count);   // (the first two may already be delivered and gone)
        // A burst of "count" goes at once, then one per window/count (GCRA): 0, 0, 30s, 60s, 90s.
        var expected = new TimeSpan?[] { null, null, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(90) };
        for (var i = 0; i < 5; i++)
        {
            var envelope = h.Events.Accepted.Single(e => e.Id == responses[i]["id"]!.GetValue<string>());   // as committed
            Assert.Equal(expected[i] is { } d ? start + d : null, envelope.NotBefore);
            Assert.Equal(expected[i] is { } e ? start + e : null, responses[i]["not-before"]?.GetValue<DateTimeOffset>());
        }

        await scheduler.WhenIdleAsync();
        Assert.Equal(["r1@remote.test", "r2@remote.test"], agent.Delivered.Select(d => d.Rcpt).Order());
        clock.Advance(TimeSpan.FromSeconds(29));
        await scheduler.WhenIdleAsync();
        Assert.Equal(2, agent.Delivered.Count);
        clock.Advance(TimeSpan.FromSeconds(1));
        await WaitForAsync(scheduler, agent, 3);
        Assert.Equal("r3@remote.test", agent.Delivered.Last().Rcpt);
        clock.Advance(TimeSpan.FromSeconds(30));
        await WaitForAsync(scheduler, agent, 4);
        clock.Advance(TimeSpan.FromSeconds(30));
        await WaitForAsync(scheduler, agent, 5);
        Assert.Equal(["r1@remote.test", "r2@remote.test", "r3@remote.test", "r4@remote.test", "r5@remote.test"],
            agent.Delivered.Select(d => d.Rcpt).Order());
        Assert.Equal([start + TimeSpan.FromSeconds(30), start + TimeSpan.FromSeconds(60), start + TimeSpan.FromSeconds(90)],
            agent.Delivered.Skip(2).Select(d => d.At));
    }

    [Fact]
    public async Task Held_mail_keeps_its_release_time_across_a_restart()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 12, 0, 0, TimeSpan.Zero));
        await using var h = await ApiHarness.StartAsync(Clients, clock);
        for (var n = 1; n <= 3; n++) await h.SubmitAsync(Message(n), "held-token");
        await h.RestartAsync();
        var agent = new RecordingAgent(clock);
        await using var scheduler = new QueueScheduler(h.Spool, h.Settings.Queue, agent, new NoDeliveryReports(), clock);
        scheduler.Start();
        await scheduler.Ready;
        await scheduler.WhenIdleAsync();
        Assert.Equal(2, agent.Delivered.Count);
        clock.Advance(TimeSpan.FromSeconds(30));
        await WaitForAsync(scheduler, agent, 3);
    }

    private static async Task WaitForAsync(QueueScheduler scheduler, RecordingAgent agent, int count)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (agent.Delivered.Count < count)
        {
            Assert.True(DateTime.UtcNow < deadline, $"only {agent.Delivered.Count} of {count} delivered");
            await scheduler.WhenIdleAsync();
        }
        Assert.Equal(count, agent.Delivered.Count);
    }

    /// <summary>Delivers everything at once and records when (by the fake clock).</summary>
    private sealed class RecordingAgent(TimeProvider clock) : IDeliveryAgent
    {
        public ConcurrentQueue<(string Rcpt, DateTimeOffset At)> Delivered { get; } = new();

        public Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
        {
            foreach (var r in request.Recipients) Delivered.Enqueue((r.Address, clock.GetUtcNow()));
            return Task.FromResult<IReadOnlyList<RecipientOutcome>>(request.Recipients.Select(r => RecipientOutcome.Delivered(r.Address)).ToList());
        }
    }
}
