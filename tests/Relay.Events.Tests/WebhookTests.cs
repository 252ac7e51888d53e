// Webhooks against a real HTTP receiver on 127.0.0.1: signatures, order, per-client filtering, a receiver that is
// failing or not listening, and a restart with events not yet acknowledged.
using System.Net.Sockets;
using Relay.Spool;

namespace Relay.Events.Tests;

public sealed class WebhookTests : IDisposable
{
    private const string Secret = "s3cret-for-shop";
    private readonly TempDir _dir = new();

    private string EventsDir => Path.Combine(_dir.Path, "events");

    private static readonly WebhookOptions FastRetries = new()
    {
        InitialBackoff = TimeSpan.FromMilliseconds(20),
        MaxBackoff = TimeSpan.FromMilliseconds(100),
        RequestTimeout = TimeSpan.FromSeconds(30),   // never reached by a loopback receiver, even on a loaded machine
    };

    private DeliveryEventLog OpenLog() => DeliveryEventLog.Open(EventsDir, new DeliveryEventLogOptions { PurgeInterval = null });

    private static async Task<WebhookDispatcher> StartDispatcherAsync(DeliveryEventLog log, Uri url)
    {
        var d = new WebhookDispatcher(log, [new WebhookTarget("shop", url, Secret)], FastRetries);
        await d.StartAsync(CancellationToken.None);
        return d;
    }

    /// <summary>A deferred and a delivered event for one message of <paramref name="client"/>: three events with accepted.</summary>
    private static async Task SubmitAndDeliverAsync(DeliveryEventLog log, string id, string client = "shop")
    {
        var env = Envelopes.Api(id, client);
        await log.MessageAcceptedAsync(env, CancellationToken.None);
        await log.AppendAsync(env, [new StoredEvent { Type = "deferred", Rcpt = 0, Address = "a@x.test", At = Envelopes.Epoch, Attempt = 1, Code = 450, Status = "4.2.0", Text = "busy" }]);
        await log.AppendAsync(env, [new StoredEvent { Type = "delivered", Rcpt = 0, Address = "a@x.test", At = Envelopes.Epoch, Attempt = 2, Code = 250, Status = "2.0.0", Text = "ok" }]);
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task The_receiver_gets_each_of_its_clients_events_in_order_with_a_valid_signature()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var log = OpenLog();
        await SubmitAndDeliverAsync(log, "0000000000000001");
        await SubmitAndDeliverAsync(log, "0000000000000002", client: "other");   // not this webhook's client
        await using var dispatcher = await StartDispatcherAsync(log, receiver.Url);
        await SubmitAndDeliverAsync(log, "0000000000000003");                    // appended while running: wakes it

        await Eventually.TrueAsync(() => receiver.Accepted.Count >= 6);
        var calls = receiver.Accepted;
        Assert.Equal([1L, 2, 3, 7, 8, 9], calls.Select(c => c.EventId));
        Assert.All(calls, c => Assert.True(c.SignatureValid(Secret), "bad signature " + c.Signature));
        Assert.All(calls, c => Assert.Equal(c.EventId, c.Event.Sequence));
        Assert.All(calls, c => Assert.Equal("shop", c.Event.Client));
        Assert.Equal(["accepted", "deferred", "delivered", "accepted", "deferred", "delivered"], calls.Select(c => c.Event.Type));
        var deferred = calls[1].Event;
        Assert.Equal(("0000000000000001", "a@x.test", 450, "4.2.0", "busy", 1),
                     (deferred.MessageId, deferred.Recipient, deferred.Code, deferred.EnhancedStatus, deferred.Text, deferred.Attempt));
        Assert.False(calls[0].SignatureValid("another secret"));
        await Eventually.TrueAsync(() => dispatcher.AcknowledgedSequence("shop") == 9);
    }

    [Fact]
    public async Task A_failing_receiver_gets_the_events_later_in_order_once_it_answers_2xx()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var healthy = false;
        receiver.Answer = _ => Volatile.Read(ref healthy) ? 204 : 500;
        await using var log = OpenLog();
        await using var dispatcher = await StartDispatcherAsync(log, receiver.Url);
        await SubmitAndDeliverAsync(log, "0000000000000001");

        await Eventually.TrueAsync(() => receiver.Calls.Count >= 3, because: "no retries while the receiver fails");
        Assert.All(receiver.Calls, c => Assert.Equal(1, c.EventId));   // the first event is retried; nothing overtakes it
        Assert.Equal(0, dispatcher.AcknowledgedSequence("shop"));

        Volatile.Write(ref healthy, true);
        await Eventually.TrueAsync(() => receiver.Accepted.Count == 3);
        Assert.Equal([1L, 2, 3], receiver.Accepted.Select(c => c.EventId));
        await Eventually.TrueAsync(() => dispatcher.AcknowledgedSequence("shop") == 3);
    }

    [Fact]
    public async Task A_receiver_that_is_not_listening_gets_the_events_once_it_is_up()
    {
        // Find a free port, then leave nothing listening on it.
        int port;
        await using (var probe = await WebhookReceiver.StartAsync()) port = probe.Port;
        await using var log = OpenLog();
        await using var dispatcher = await StartDispatcherAsync(log, new Uri($"http://127.0.0.1:{port}/hook"));
        await SubmitAndDeliverAsync(log, "0000000000000001");
        using (var client = new TcpClient())
            await Assert.ThrowsAnyAsync<SocketException>(() => client.ConnectAsync("127.0.0.1", port));

        await using var receiver = await WebhookReceiver.StartAsync(port);
        await Eventually.TrueAsync(() => receiver.Accepted.Count == 3);
        Assert.Equal([1L, 2, 3], receiver.Accepted.Select(c => c.EventId));
    }

    [Fact]
    public async Task After_a_restart_unacknowledged_events_are_sent_and_acknowledged_ones_are_not()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var acceptUpTo = 2L;
        receiver.Answer = id => id <= Interlocked.Read(ref acceptUpTo) ? 200 : 503;

        await using (var log = OpenLog())
        await using (var dispatcher = await StartDispatcherAsync(log, receiver.Url))
        {
            await SubmitAndDeliverAsync(log, "0000000000000001");
            await SubmitAndDeliverAsync(log, "0000000000000002");
            await Eventually.TrueAsync(() => dispatcher.AcknowledgedSequence("shop") == 2 && receiver.Calls.Any(c => c.EventId == 3));
            await dispatcher.StopAsync(CancellationToken.None);
        }
        Assert.Equal([1L, 2], receiver.Accepted.Select(c => c.EventId));

        Interlocked.Exchange(ref acceptUpTo, long.MaxValue);
        await using (var log = OpenLog())
        await using (var dispatcher = await StartDispatcherAsync(log, receiver.Url))
        {
            await SubmitAndDeliverAsync(log, "0000000000000003");   // new events after the restart follow the old ones
            await Eventually.TrueAsync(() => dispatcher.AcknowledgedSequence("shop") == 9);
        }
        // Each event acknowledged exactly once, in order: 1 and 2 were not sent again.
        Assert.Equal([1L, 2, 3, 4, 5, 6, 7, 8, 9], receiver.Accepted.Select(c => c.EventId));
        Assert.All(receiver.Calls, c => Assert.True(c.SignatureValid(Secret)));
        if (!OperatingSystem.IsWindows()) Assert.Equal(SpoolFiles.FileMode600, File.GetUnixFileMode(Directory.GetFiles(Path.Combine(EventsDir, "webhooks")).Single()));
    }

    [Fact]
    public async Task A_receiver_that_does_not_answer_in_time_is_retried()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var first = true;
        receiver.Hold = async (_, aborted) =>
        {
            if (!Interlocked.Exchange(ref first, false)) return;
            await Task.Delay(Timeout.Infinite, aborted);   // hangs until the sender's timeout aborts the request
        };
        await using var log = OpenLog();
        var options = new WebhookOptions { InitialBackoff = TimeSpan.FromMilliseconds(20), MaxBackoff = TimeSpan.FromMilliseconds(50), RequestTimeout = TimeSpan.FromSeconds(2) };
        await using var dispatcher = new WebhookDispatcher(log, [new WebhookTarget("shop", receiver.Url, Secret)], options);
        await dispatcher.StartAsync(CancellationToken.None);
        await log.MessageAcceptedAsync(Envelopes.Api("0000000000000001"), CancellationToken.None);

        await Eventually.TrueAsync(() => dispatcher.AcknowledgedSequence("shop") == 1);
        // The hung try is recorded when the receiver notices the abort, which may come after the retry's answer.
        await Eventually.TrueAsync(() => receiver.Calls.Count >= 2);
        Assert.Equal([0, 200], receiver.Calls.Select(c => c.Answered).Order());   // the hung try, and one retry
    }
}
