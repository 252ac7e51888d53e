// What an operator does to an API message reaches its status and webhook: a requeued dead letter that is then
// delivered shows delivered (review #4); a cancel without bounce ends in a final "failed" event (review #11c).
namespace Relay.Events.Tests;

public sealed class OperatorEventTests
{
    private static Relay.Scheduler.RecipientOutcome Rejected(Relay.Scheduler.DeliveryRecipient r) =>
        Relay.Scheduler.RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");

    [Fact]
    public async Task A_requeued_dead_letter_that_is_then_delivered_shows_delivered_in_status_and_webhook()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var h = new Harness(Harness.Schedule([TimeSpan.FromMinutes(10)]));
        await using var dispatcher = new WebhookDispatcher(h.Log, [new WebhookTarget("shop", receiver.Url, "s3cret")],
            new WebhookOptions { InitialBackoff = TimeSpan.FromMilliseconds(20), MaxBackoff = TimeSpan.FromMilliseconds(100) });
        await dispatcher.StartAsync(CancellationToken.None);
        h.Agent.Answer = Rejected;
        await h.StartAsync();
        var id = await h.SubmitAsync(recipients: "a@x.test");
        await h.IdleAsync();
        Assert.Equal("failed", (await h.StatusAsync(id)).Recipients[0].State);
        Assert.NotNull(h.Spool.Find(id)!.FinalizedAt);   // a dead letter

        h.Agent.Answer = r => Relay.Scheduler.RecipientOutcome.Delivered(r.Address, "mx.x.test");
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        var result = await h.Scheduler.RetryAsync(id, CancellationToken.None);
        Assert.Equal(Relay.Scheduler.ControlOutcome.Done, result.Outcome);
        await Eventually.TrueAsync(() => h.Spool.Find(id) is null, because: "the requeued message delivered");
        await h.IdleAsync();

        var status = await h.StatusAsync(id);
        var rcpt = Assert.Single(status.Recipients);
        Assert.Equal(("delivered", 1), (rcpt.State, rcpt.Attempts));
        Assert.Equal(Envelopes.Epoch.AddMinutes(5), status.FinishedAt);
        Assert.Equal(["accepted", "failed", "bounced", "requeued", "delivered"], status.Events.Select(e => e.Type));
        await Eventually.TrueAsync(() => receiver.Accepted.Any(c => c.Event.Type == "delivered"), because: "the webhook got delivered");
        Assert.Equal(["accepted", "failed", "bounced", "requeued", "delivered"], receiver.Accepted.Select(c => c.Event.Type));
    }

    [Fact]
    public async Task A_requeue_survives_a_restart_of_the_log_so_the_status_stays_queued_not_failed()
    {
        await using var h = new Harness(Harness.Schedule([TimeSpan.FromMinutes(10)]));
        var envelope = Envelopes.Api("00000000000000a1");
        await h.Log.MessageAcceptedAsync(envelope, CancellationToken.None);
        await h.Log.AppendAsync(envelope, [new StoredEvent { Type = "failed", Rcpt = 0, Address = "a@x.test", At = Envelopes.Epoch, Attempt = 1, Code = 550 }]);
        await h.Log.RequeuingAsync(envelope.Id, envelope, [0], CancellationToken.None);
        await h.Log.AppendAsync(envelope, [new StoredEvent { Type = "deferred", Rcpt = 0, Address = "a@x.test", At = Envelopes.Epoch, Attempt = 1, Code = 450 }]);
        var status = await h.StatusAsync(envelope.Id);
        Assert.Equal("deferred", status.Recipients[0].State);
        Assert.Null(status.FinishedAt);

        await h.Log.DisposeAsync();
        await using var again = DeliveryEventLog.Open(h.EventsDirectory, new DeliveryEventLogOptions { PurgeInterval = null });
        await again.AppendAsync(envelope, [new StoredEvent { Type = "delivered", Rcpt = 0, Address = "a@x.test", At = Envelopes.Epoch, Attempt = 2, Code = 250 }]);
        var after = (await again.FindAsync(envelope.Id, CancellationToken.None))!;
        Assert.Equal("delivered", after.Recipients[0].State);   // replay un-finalized it, so the new final is kept
        Assert.NotNull(after.FinishedAt);
    }

    [Fact]
    public async Task Cancel_without_bounce_records_a_final_failed_event()
    {
        await using var h = new Harness(Harness.Schedule([TimeSpan.FromHours(1)]));
        h.Agent.Answer = r => Relay.Scheduler.RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test");
        await h.StartAsync();
        var id = await h.SubmitAsync(recipients: ["a@x.test", "b@x.test"]);
        await h.IdleAsync();

        var result = await h.Scheduler.CancelAsync(id, bounce: false, CancellationToken.None);
        Assert.Equal(Relay.Scheduler.ControlOutcome.Done, result.Outcome);

        var status = await h.StatusAsync(id);
        Assert.All(status.Recipients, r => Assert.Equal("failed", r.State));
        Assert.NotNull(status.FinishedAt);
        var cancelled = status.Events.Where(e => e.Type == "failed").ToList();
        Assert.Equal(2, cancelled.Count);
        Assert.All(cancelled, e => Assert.Equal("cancelled by the operator", e.Text));
        Assert.DoesNotContain(status.Events, e => e.Type == "bounced");   // no DSN went out
    }

    // Review 2, finding 1: the real outcome of an attempt in flight during a cancel is recorded as it is (that the
    // scheduler sends no DSN for it is tested in tests/Relay.Spool.Tests/ReviewFixTests.cs).
    [Fact]
    public async Task An_outcome_reported_after_a_cancel_is_recorded_as_it_is()
    {
        await using var h = new Harness(Harness.Schedule([TimeSpan.FromMinutes(10)]));
        var envelope = Envelopes.Api("00000000000000c1");
        await h.Log.MessageAcceptedAsync(envelope, CancellationToken.None);
        var report = new Relay.Scheduler.DeliveryReport(envelope.Id, envelope,
            [new Relay.Scheduler.ReportedRecipient(0, envelope.Recipients[0], Relay.Spool.RecipientStatus.Delivered, null, 1, null, null)],
            _ => throw new InvalidOperationException("no content needed"));
        await h.Log.FinalOutcomesAsync(report, CancellationToken.None);
        var status = await h.StatusAsync(envelope.Id);
        Assert.Equal("delivered", status.Recipients[0].State);
        Assert.Equal(["accepted", "delivered"], status.Events.Select(e => e.Type));
    }
}
