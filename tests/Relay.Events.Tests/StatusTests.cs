// The status view driven through the decorators by a real QueueScheduler over a real FileSpool; the delivery
// agent is the scripted collaborator on the far side of the boundary.
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Events.Tests;

public sealed class StatusTests
{
    private static TimeSpan M(double minutes) => TimeSpan.FromMinutes(minutes);

    [Fact]
    public async Task Deferred_once_then_delivered_shows_each_step_and_survives_the_message_leaving_the_spool()
    {
        await using var h = new Harness(Harness.Schedule([M(10)]));
        h.Agent.Answer = r => r.Attempt == 1
            ? RecipientOutcome.Temporary(r.Address, 450, "4.2.0", "mailbox busy", "mx.x.test")
            : new RecipientOutcome(r.Address, OutcomeKind.Delivered, 250, "2.0.0", "queued as 42", "mx.x.test");   // as Relay.Delivery reports it
        var id = await h.SubmitAsync(recipients: ["a@x.test"]);

        var queued = await h.StatusAsync(id);
        Assert.Equal(("queued", 0), (queued.Recipients[0].State, queued.Recipients[0].Attempts));

        await h.StartAsync();
        var deferred = await h.StatusAsync(id);
        var r = deferred.Recipients[0];
        Assert.Equal(("deferred", 1, "450 4.2.0 mailbox busy", "default", "default"), (r.State, r.Attempts, r.LastReply, r.Schedule, r.Queue));
        Assert.Equal(Envelopes.Epoch, r.LastAttemptAt);
        Assert.Equal(Envelopes.Epoch + M(10), r.NextAttemptAt);   // from the spool
        Assert.Null(deferred.FinishedAt);

        await h.AdvanceAsync(M(11), M(1));
        Assert.Null(h.Spool.Find(id));   // delivered: gone from the spool
        var done = await h.StatusAsync(id);
        r = done.Recipients[0];
        Assert.Equal(("delivered", 2, "250 2.0.0 queued as 42"), (r.State, r.Attempts, r.LastReply));
        Assert.Equal(Envelopes.Epoch + M(10), r.LastAttemptAt);
        Assert.Null(r.NextAttemptAt);
        Assert.Equal(Envelopes.Epoch + M(10), done.FinishedAt);
        Assert.Equal(["accepted", "deferred", "delivered"], done.Events.Select(e => e.Type));
        var deferredEvent = done.Events[1];
        Assert.Equal((1, 450, "4.2.0", "mailbox busy", "mx.x.test", "a@x.test", "shop"),
                     (deferredEvent.Attempt, deferredEvent.Code, deferredEvent.EnhancedStatus, deferredEvent.Text, deferredEvent.RemoteHost, deferredEvent.Recipient, deferredEvent.Client));
        Assert.Equal(("mx.x.test", 2), (done.Events[2].RemoteHost, done.Events[2].Attempt));
        Assert.Single(h.Reports.Final);   // the DSN stage behind the decorator still got its report
    }

    [Fact]
    public async Task A_5xx_failure_is_failed_and_bounced_to_the_sender()
    {
        await using var h = new Harness(Harness.Schedule([M(10)]));
        h.Agent.Answer = r => r.Address.StartsWith("bad")
            ? RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test")
            : RecipientOutcome.Delivered(r.Address);
        var id = await h.SubmitAsync(recipients: ["bad@x.test", "good@x.test"]);
        await h.StartAsync();

        var status = await h.StatusAsync(id);
        Assert.Equal(("failed", 1, "550 5.1.1 no such user"), (status.Recipients[0].State, status.Recipients[0].Attempts, status.Recipients[0].LastReply));
        Assert.Equal("delivered", status.Recipients[1].State);
        Assert.NotNull(status.FinishedAt);
        Assert.Equal("accepted", status.Events[0].Type);
        Assert.Equal(["accepted", "bounced", "delivered", "failed"], status.Events.Select(e => e.Type).Order());
        var bounced = Assert.Single(status.Events, e => e.Type == "bounced");
        Assert.Equal("bad@x.test", bounced.Recipient);
        Assert.True(status.Events.ToList().IndexOf(bounced) > status.Events.ToList().FindIndex(e => e.Type == "failed"));
    }

    [Fact]
    public async Task No_bounce_event_when_the_sender_is_null_or_notify_excludes_failure()
    {
        await using var h = new Harness(Harness.Schedule([M(10)]));
        h.Agent.Answer = r => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user");
        var nullSender = await h.SubmitAsync(sender: "", recipients: ["a@x.test"]);
        var never = await h.SubmitAsync(notify: DsnNotify.Never, recipients: ["b@x.test"]);
        await h.StartAsync();

        Assert.Equal(["accepted", "failed"], (await h.StatusAsync(nullSender)).Events.Select(e => e.Type));
        Assert.Equal(["accepted", "failed"], (await h.StatusAsync(never)).Events.Select(e => e.Type));
    }

    [Fact]
    public async Task Running_out_of_attempts_is_expired_after_each_deferral()
    {
        await using var h = new Harness(Harness.Schedule([M(1)], expiry: new Expiry.Attempts(2)));
        h.Agent.Answer = r => RecipientOutcome.Temporary(r.Address, 452, "4.2.2", "mailbox full", "mx.x.test");
        var id = await h.SubmitAsync(recipients: ["a@x.test"]);
        await h.StartAsync();
        await h.AdvanceAsync(M(3), M(1));

        var status = await h.StatusAsync(id);
        Assert.Equal(["accepted", "deferred", "deferred", "expired", "bounced"], status.Events.Select(e => e.Type));
        Assert.Equal([1, 2], status.Events.Where(e => e.Type == "deferred").Select(e => e.Attempt));
        var r = status.Recipients[0];
        Assert.Equal(("expired", 2, "452 4.2.2 mailbox full"), (r.State, r.Attempts, r.LastReply));
        Assert.NotNull(status.FinishedAt);
    }

    [Fact]
    public async Task Time_expiry_and_delay_notices_are_events()
    {
        await using var h = new Harness(Harness.Schedule([M(10)], notify: [M(15)], expiry: new Expiry.Ttl(M(30))));
        h.Agent.Answer = r => RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test");
        var id = await h.SubmitAsync(recipients: ["a@x.test"]);
        await h.StartAsync();
        await h.AdvanceAsync(M(35), M(1));

        var status = await h.StatusAsync(id);
        Assert.Equal(["accepted", "deferred", "deferred", "delayed-dsn-sent", "deferred", "expired", "bounced"], status.Events.Select(e => e.Type));
        var expired = status.Events.Single(e => e.Type == "expired");
        Assert.Equal("4.4.7", expired.EnhancedStatus);
        Assert.Equal(("expired", 3), (status.Recipients[0].State, status.Recipients[0].Attempts));
        Assert.Single(h.Reports.Delayed);
    }

    [Fact]
    public async Task An_agent_exception_is_deferred_451_4_4_0_and_still_rethrown_to_the_scheduler()
    {
        await using var h = new Harness(Harness.Schedule([M(10)]));
        h.Agent.Throw = _ => h.Agent.Calls == 1 ? new InvalidOperationException("boom") : null;
        var id = await h.SubmitAsync(recipients: ["a@x.test"]);
        await h.StartAsync();

        var status = await h.StatusAsync(id);
        Assert.Equal(("deferred", "451 4.4.0 delivery failed: boom"), (status.Recipients[0].State, status.Recipients[0].LastReply));
        // The scheduler saw the exception as a temporary failure too: it retries at +10m.
        Assert.Equal(Envelopes.Epoch + M(10), h.Spool.Find(id)!.GetRecipient(0).NextAttemptAt);
        await h.AdvanceAsync(M(10), M(1));
        Assert.Equal("delivered", (await h.StatusAsync(id)).Recipients[0].State);
    }

    [Fact]
    public async Task Messages_not_submitted_through_the_api_produce_no_events()
    {
        await using var h = new Harness(Harness.Schedule([M(10)]));
        h.Agent.Answer = r => r.Attempt == 1
            ? RecipientOutcome.Temporary(r.Address, 450, "4.2.0", "busy")
            : RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user");
        var id = await h.SubmitAsync(source: "smtp", recipients: ["a@x.test"]);
        await h.StartAsync();
        await h.AdvanceAsync(M(11), M(1));

        Assert.Equal(2, h.Agent.Calls);
        Assert.Single(h.Reports.Final);                 // passed through to the DSN stage
        Assert.Equal(0, h.Log.LastSequence);           // and nothing recorded
        Assert.Null(await h.Log.FindAsync(id, CancellationToken.None));
    }

    [Fact]
    public async Task The_status_of_a_finished_message_is_rebuilt_from_the_log_after_a_restart()
    {
        await using var h = new Harness(Harness.Schedule([M(10)]));
        h.Agent.Answer = r => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
        var id = await h.SubmitAsync(recipients: ["a@x.test"]);
        await h.StartAsync();
        var before = await h.StatusAsync(id);
        await h.Log.DisposeAsync();

        await using var reopened = DeliveryEventLog.Open(h.EventsDirectory, new DeliveryEventLogOptions { PurgeInterval = null });
        var after = await reopened.FindAsync(id, CancellationToken.None);
        Assert.NotNull(after);
        Assert.Equal(before.Recipients, after.Recipients);
        Assert.Equal(before.Events, after.Events);
        Assert.Equal((before.FinishedAt, before.AcceptedAt, before.Sender), (after.FinishedAt, after.AcceptedAt, after.Sender));
    }

    [Fact]
    public async Task When_the_log_cannot_write_a_final_event_the_scheduler_repeats_the_report_and_it_is_recorded_then()
    {
        var failing = 0;   // 1 = the next batch write fails
        await using var h = new Harness(Harness.Schedule([M(10)]), () => Interlocked.Exchange(ref failing, 0) == 1 ? new IOException("disk full") : null);
        h.Agent.Answer = r => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
        var id = await h.SubmitAsync(recipients: ["a@x.test"]);
        Interlocked.Exchange(ref failing, 1);   // the final report's events hit the disk error
        await h.StartAsync();

        Assert.Equal(["accepted"], (await h.StatusAsync(id)).Events.Select(e => e.Type));
        await h.AdvanceAsync(M(2), M(1));       // the scheduler retries an unfinished report

        var status = await h.StatusAsync(id);
        Assert.Equal(["accepted", "failed", "bounced"], status.Events.Select(e => e.Type));
        Assert.Equal("failed", status.Recipients[0].State);
        Assert.Equal(2, h.Reports.Final.Count);   // the cost: the DSN stage saw the report twice
        Assert.True(status.Events[1].Sequence > 3, "sequence numbers of the failed write are not reused");
    }
}
