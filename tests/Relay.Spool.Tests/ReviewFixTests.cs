// Regression tests for the review of main at 25a7792 (findings 1, 3, 9): held mail and its queue time, cancel
// with bounce while a delivery is in flight, dead letters requeued and failed again.
using Relay.Config.Settings;
using Relay.Scheduler;
using static Relay.Spool.Tests.Settings;

namespace Relay.Spool.Tests;

public sealed class ReviewFixTests
{
    private static async Task<string> CommitHeldAsync(Harness h, DateTimeOffset notBefore, params string[] recipients)
    {
        await using var m = h.Spool.Begin();
        await m.WriteAsync(Messages.Body(m.Id));
        await m.CommitAsync(new MessageEnvelope
        {
            Id = m.Id,
            Sender = "api@example.test",
            ArrivedAt = h.Clock.GetUtcNow(),
            Source = "api",
            NotBefore = notBefore,
            Recipients = recipients.Select(r => new RecipientEntry { Address = r, Schedule = "default", Queue = "default" }).ToList(),
        });
        return m.Id;
    }

    // Finding 1: expire 1h, notify 30m, held 6h by the client's rate. Without the fix the message expired (and drew a
    // delay DSN) during the hold and was never tried.
    [Fact]
    public async Task A_message_held_past_its_expire_is_still_attempted_and_delivered_with_no_delay_notice_during_the_hold()
    {
        await using var h = new Harness(
            [Schedule("default", "default", [M(10)], notify: [M(30)], expiry: new Expiry.Ttl(TimeSpan.FromHours(1)))],
            [Queue("default", 1)]);
        await h.StartAsync();
        var arrived = h.Clock.GetUtcNow();
        var id = await CommitHeldAsync(h, arrived.AddHours(6), "a@x.test");
        await h.IdleAsync();
        Assert.Equal(arrived.AddHours(6), h.Spool.Find(id)!.ArrivedAt);   // its queue time starts when the hold ends

        await h.AdvanceAsync(TimeSpan.FromHours(6) - S(1), M(5));
        Assert.Empty(h.Agent.Calls);
        Assert.Empty(h.Reports.Delayed);
        Assert.Empty(h.Reports.Final);

        await h.AdvanceAsync(S(2));
        var call = Assert.Single(h.Agent.Calls);
        Assert.Equal(arrived, call.Request.Envelope.ArrivedAt);   // the envelope keeps the real arrival (Received, DSN)
        var final = Assert.Single(h.Reports.Final);
        Assert.Equal(RecipientStatus.Delivered, Assert.Single(final.Recipients).Status);
        Assert.Empty(h.Reports.Delayed);
        Assert.Null(h.Spool.Find(id));
    }

    // Finding 1, after the hold: expiry and notify count from its end, and survive a restart (journaled).
    [Fact]
    public async Task A_held_message_expires_and_notifies_counting_from_the_end_of_its_hold_also_after_a_restart()
    {
        var dir = new TempDir();
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(Harness.Epoch);
        ScheduleSettings[] schedules = [Schedule("default", "default", [M(10)], notify: [M(30)], expiry: new Expiry.Ttl(TimeSpan.FromHours(1)))];
        string id;
        await using (var h = new Harness(schedules, [Queue("default", 1)], dir.Path, clock))
        {
            await h.StartAsync();
            id = await CommitHeldAsync(h, Harness.Epoch.AddHours(3), "a@x.test");
            await h.IdleAsync();
        }
        await using (var h = new Harness(schedules, [Queue("default", 1)], dir.Path, clock))
        {
            h.Agent.Answer = (_, r) => RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test");
            await h.StartAsync();
            Assert.Equal(Harness.Epoch.AddHours(3), h.Spool.Find(id)!.ArrivedAt);
            await h.AdvanceAsync(TimeSpan.FromHours(3) + M(29), M(1));
            Assert.Equal(Harness.Epoch.AddHours(3), h.Agent.Calls.First().At);   // the first attempt, when the hold ended
            Assert.Empty(h.Reports.Delayed);
            await h.AdvanceAsync(M(2), M(1));
            var delayed = Assert.Single(h.Reports.Delayed);
            Assert.Equal(Harness.Epoch.AddHours(4), delayed.Report.Recipients.Single().WillRetryUntil);
            Assert.Equal(Harness.Epoch, delayed.Report.Envelope.ArrivedAt);
            Assert.Empty(h.Reports.Final);
            await h.AdvanceAsync(M(31), M(1));
            var expired = Assert.Single(Assert.Single(h.Reports.Final).Recipients);
            Assert.Equal(RecipientStatus.Expired, expired.Status);
        }
        dir.Dispose();
    }

    // Finding 3: the recipient in flight may already have been reported delivered; it must not be bounced too.
    [Fact]
    public async Task Cancel_with_bounce_while_a_recipient_is_in_flight_bounces_only_the_waiting_ones()
    {
        await using var h = new Harness([Schedule("default", "default", [TimeSpan.FromHours(1)])], [Queue("default", 2)]);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Agent.Hold = (req, ct) => req.Domain == "x.test" ? release.Task.WaitAsync(ct) : Task.CompletedTask;
        h.Agent.Answer = (req, r) => req.Domain == "x.test"
            ? RecipientOutcome.Delivered(r.Address, "mx.x.test")
            : RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.y.test");
        var observer = new RecordingObserver();
        h.Scheduler.Operations = observer;
        await h.StartAsync();
        var id = await h.CommitAsync(0, ("a@x.test", "default", "default"), ("b@y.test", "default", "default"));
        await Eventually.TrueAsync(() => h.Agent.Current == 1 && h.Agent.Completed == 1 && h.Spool.Find(id)!.BusyCount == 1,
                                    TimeSpan.FromSeconds(30), "a@x.test in flight, b@y.test deferred");

        var result = await h.Scheduler.CancelAsync(id, bounce: true, CancellationToken.None);
        Assert.Equal(ControlOutcome.Done, result.Outcome);
        var report = Assert.Single(h.Reports.Final);
        Assert.Equal(["b@y.test"], report.Recipients.Select(r => r.Entry.Address));
        Assert.Null(h.Spool.Find(id));
        Assert.Empty(observer.Calls);   // the one in flight is not marked cancelled: it may have been delivered (review 2, #1)
        release.SetResult();
        await h.IdleAsync();
        Assert.Single(h.Reports.Final);   // the in-flight outcome goes to no DSN after the cancel...
        await Eventually.TrueAsync(() => { lock (observer.Calls) return observer.Calls.Count > 0; }, TimeSpan.FromSeconds(30), "the real outcome");
        Assert.Equal([(id, "delivered", 0)], observer.Calls);   // ...but the observer (events) gets its real outcome
    }

    // Review 2, finding 1: an attempt in flight during a cancel that leaves its recipient pending: it is cancelled then.
    [Fact]
    public async Task A_recipient_in_flight_during_a_cancel_is_marked_cancelled_only_when_its_attempt_leaves_it_pending()
    {
        await using var h = new Harness([Schedule("default", "default", [TimeSpan.FromHours(1)])], [Queue("default", 2)]);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Agent.Hold = (_, ct) => release.Task.WaitAsync(ct);
        h.Agent.Answer = (_, r) => RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test");
        var observer = new RecordingObserver();
        h.Scheduler.Operations = observer;
        await h.StartAsync();
        var id = await h.CommitAsync(0, ("a@x.test", "default", "default"));
        await Eventually.TrueAsync(() => h.Agent.Current == 1, TimeSpan.FromSeconds(30), "a@x.test in flight");

        Assert.Equal(ControlOutcome.Done, (await h.Scheduler.CancelAsync(id, bounce: false, CancellationToken.None)).Outcome);
        Assert.Empty(observer.Calls);
        release.SetResult();
        await Eventually.TrueAsync(() => { lock (observer.Calls) return observer.Calls.Count > 0; }, TimeSpan.FromSeconds(30), "the cancel after the attempt");
        await h.IdleAsync();
        Assert.Equal([(id, "cancelled", 0)], observer.Calls);
        Assert.Empty(h.Reports.Final);
    }

    // Review 2, finding 3: a second cancel while the first is still at work must not bounce the recipient in flight.
    [Fact]
    public async Task A_second_cancel_while_the_first_is_running_does_nothing()
    {
        await using var h = new Harness([Schedule("default", "default", [TimeSpan.FromHours(1)])], [Queue("default", 2)]);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Agent.Hold = (req, ct) => req.Domain == "x.test" ? release.Task.WaitAsync(ct) : Task.CompletedTask;
        h.Agent.Answer = (req, r) => req.Domain == "x.test"
            ? RecipientOutcome.Delivered(r.Address, "mx.x.test")
            : RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.y.test");
        var observer = new RecordingObserver { Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) };
        h.Scheduler.Operations = observer;
        await h.StartAsync();
        var id = await h.CommitAsync(0, ("a@x.test", "default", "default"), ("b@y.test", "default", "default"));
        await Eventually.TrueAsync(() => h.Agent.Current == 1 && h.Agent.Completed == 1 && h.Spool.Find(id)!.BusyCount == 1,
                                    TimeSpan.FromSeconds(30), "a@x.test in flight, b@y.test deferred");

        var first = h.Scheduler.CancelAsync(id, bounce: false, CancellationToken.None);   // held in the observer
        await Eventually.TrueAsync(() => { lock (observer.Calls) return observer.Calls.Count > 0; }, TimeSpan.FromSeconds(30), "the first cancel at work");
        var second = await h.Scheduler.CancelAsync(id, bounce: true, CancellationToken.None);
        Assert.Equal(ControlOutcome.NothingToDo, second.Outcome);
        observer.Gate!.SetResult();
        Assert.Equal(ControlOutcome.Done, (await first).Outcome);
        release.SetResult();
        await h.IdleAsync();
        Assert.Empty(h.Reports.Final);   // nobody was bounced
    }

    // Review 2, finding 2: a second retry while the first is at work is refused; a requeue that does not happen (the
    // dead letter was purged meanwhile) re-asserts the recipients' earlier final state to the observer.
    [Fact]
    public async Task A_requeue_that_does_not_happen_is_undone_for_the_observer_and_a_second_one_is_refused()
    {
        await using var h = new Harness([Schedule("default", "default", [TimeSpan.FromHours(1)])], [Queue("default", 1)]);
        h.Agent.Answer = (_, r) => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
        var observer = new RecordingObserver { RequeueGate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) };
        h.Scheduler.Operations = observer;
        await h.StartAsync();
        var id = await h.CommitAsync(0, ("a@x.test", "default", "default"));
        await h.IdleAsync();
        Assert.NotNull(h.Spool.Find(id)!.FinalizedAt);

        var first = h.Scheduler.RetryAsync(id, CancellationToken.None);
        await Eventually.TrueAsync(() => { lock (observer.Calls) return observer.Calls.Count > 0; }, TimeSpan.FromSeconds(30), "the requeue announced");
        var second = await h.Scheduler.RetryAsync(id, CancellationToken.None);
        Assert.Equal(ControlOutcome.NothingToDo, second.Outcome);
        Assert.Equal(1, await h.Spool.PurgeDeadLettersAsync(Harness.Epoch.AddDays(30), CancellationToken.None));
        observer.RequeueGate!.SetResult();
        Assert.Equal(ControlOutcome.NotFound, (await first).Outcome);
        Assert.Equal([(id, "requeued", 0), (id, "failed", 0)], observer.Calls);
    }

    // Review 2, finding 10: a held message in front neither hides older pending mail nor gives a future arrival.
    [Fact]
    public async Task The_oldest_pending_arrival_skips_held_mail()
    {
        await using var h = new Harness([Schedule("default", "default", [TimeSpan.FromHours(1)])], [Queue("default", 1)]);
        h.Agent.Answer = (_, r) => RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test");
        await h.StartAsync();
        await CommitHeldAsync(h, Harness.Epoch.AddHours(6), "held@x.test");
        await h.IdleAsync();
        Assert.Equal(Harness.Epoch, h.Scheduler.GetQueueStats().Single().OldestPendingArrival);   // held alone: now, not +6h
        h.Clock.Advance(M(5));
        await h.CommitAsync(0, ("a@x.test", "default", "default"));
        await h.IdleAsync();
        Assert.Equal(Harness.Epoch.AddMinutes(5), h.Scheduler.GetQueueStats().Single().OldestPendingArrival);
    }

    // Review 2, finding 9: a reroute that fails after the new settings are in force is reported as such, not thrown
    // (the host would refuse a reload the scheduler has in fact applied).
    [Fact]
    public async Task A_reload_whose_reroute_fails_reports_the_new_settings_in_force()
    {
        await using var h = new Harness([Schedule("default", "default", [TimeSpan.FromHours(1)])], [Queue("default", 1)]);
        var spool = FailingReroute.Wrap(h.Spool);
        await using var scheduler = new QueueScheduler(spool, h.Schedules.ToDictionary(x => x.Name), h.Queues.ToDictionary(x => x.Name),
                                                       h.Agent, h.Reports, h.Clock);
        scheduler.Start();
        await scheduler.Ready.WaitAsync(TimeSpan.FromSeconds(30));
        var loaded = Relay.Config.ConfigLoader.Parse("""
            [queue.strategy]
            schedule = [ { else = "'default'" } ]
            [queue.schedule.default]
            retry = ["1h"]
            [queue.virtual.default]
            threads-per-node = 1
            [queue.virtual.bulk]
            threads-per-node = 3
            """, "reload.toml", Path.GetTempPath());
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        var next = loaded.Settings!.Queue;
        var result = await scheduler.ReconfigureAsync(next);
        Assert.Equal("journal write failed", result.RerouteError);
        Assert.Equal(["bulk"], result.QueuesAdded);
        Assert.Contains(scheduler.GetQueueStats(), q => q.Name == "bulk" && q.ThreadsPerNode == 3);
    }

    public class FailingReroute : System.Reflection.DispatchProxy
    {
        private ISpoolStore _inner = null!;

        public static ISpoolStore Wrap(ISpoolStore inner)
        {
            var proxy = Create<ISpoolStore, FailingReroute>();
            ((FailingReroute)(object)proxy)._inner = inner;
            return proxy;
        }

        protected override object? Invoke(System.Reflection.MethodInfo? method, object?[]? args)
        {
            if (method!.Name == nameof(ISpoolStore.RerouteAsync))
                return ValueTask.FromException<RerouteResult>(new IOException("journal write failed"));
            try { return method.Invoke(_inner, args); }
            catch (System.Reflection.TargetInvocationException e) { throw e.InnerException!; }
        }
    }

    private sealed class RecordingObserver : IQueueOperationsObserver
    {
        public List<(string Id, string What, int Index)> Calls { get; } = [];
        public TaskCompletionSource? Gate { get; init; }
        public TaskCompletionSource? RequeueGate { get; init; }

        public ValueTask RequeuingAsync(string messageId, MessageEnvelope envelope, IReadOnlyList<int> recipients, CancellationToken ct)
        {
            lock (Calls) Calls.AddRange(recipients.Select(i => (messageId, "requeued", i)));
            return RequeueGate is null ? ValueTask.CompletedTask : new ValueTask(RequeueGate.Task.WaitAsync(ct));
        }

        public ValueTask CancelledAsync(string messageId, MessageEnvelope envelope, IReadOnlyList<int> recipients, CancellationToken ct)
        {
            lock (Calls) Calls.AddRange(recipients.Select(i => (messageId, "cancelled", i)));
            return Gate is null ? ValueTask.CompletedTask : new ValueTask(Gate.Task.WaitAsync(ct));
        }

        public ValueTask FinalOutcomesAsync(DeliveryReport report, CancellationToken ct)
        {
            lock (Calls) Calls.AddRange(report.Recipients.Select(r => (report.MessageId, r.Status.ToString().ToLowerInvariant(), r.Index)));
            return ValueTask.CompletedTask;
        }
    }

    // Finding 9: A fails, B fails an hour later, A is requeued and fails again after B: B is purged when its retention
    // ends, not held up behind A's stale first entry. After a restart too (dead letters in finalized order).
    [Fact]
    public async Task A_dead_letter_requeued_and_failed_again_does_not_hold_up_the_purge_of_others()
    {
        var dir = new TempDir();
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(Harness.Epoch);
        ScheduleSettings[] schedules = [Schedule("default", "default", [TimeSpan.FromHours(1)])];
        string a, b;
        await using (var h = new Harness(schedules, [Queue("default", 1)], dir.Path, clock))
        {
            h.Agent.Answer = (_, r) => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
            await h.StartAsync();
            a = await h.CommitAsync(0, ("a@x.test", "default", "default"));
            await h.IdleAsync();
            clock.Advance(TimeSpan.FromHours(1));
            b = await h.CommitAsync(0, ("b@x.test", "default", "default"));
            await h.IdleAsync();
            clock.Advance(TimeSpan.FromHours(1));
            Assert.Equal(ControlOutcome.Done, (await h.Scheduler.RetryAsync(a, CancellationToken.None)).Outcome);
            await Eventually.TrueAsync(() => h.Spool.Find(a)?.FinalizedAt is not null, TimeSpan.FromSeconds(30), "a failed again");
            await h.IdleAsync();
            Assert.Equal(Harness.Epoch.AddHours(2), h.Spool.Find(a)!.FinalizedAt);

            // Retention is 7 days: B's ends at +1h+7d, A's (new) at +2h+7d.
            Assert.Equal(0, await h.Spool.PurgeDeadLettersAsync(Harness.Epoch.AddDays(7).AddMinutes(30), CancellationToken.None));
            Assert.Equal(1, await h.Spool.PurgeDeadLettersAsync(Harness.Epoch.AddDays(7).AddHours(1).AddMinutes(1), CancellationToken.None));
            Assert.Null(h.Spool.Find(b));
            Assert.NotNull(h.Spool.Find(a));
            Assert.Equal(1, await h.Spool.PurgeDeadLettersAsync(Harness.Epoch.AddDays(7).AddHours(2).AddMinutes(1), CancellationToken.None));
            Assert.Null(h.Spool.Find(a));
        }
        dir.Dispose();
    }

    [Fact]
    public async Task After_a_restart_dead_letters_are_purged_in_the_order_their_retention_ends()
    {
        var dir = new TempDir();
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(Harness.Epoch);
        ScheduleSettings[] schedules = [Schedule("default", "default", [TimeSpan.FromHours(1)], expiry: new Expiry.Ttl(TimeSpan.FromHours(3)))];
        string slow, fast;
        await using (var h = new Harness(schedules, [Queue("default", 1)], dir.Path, clock))
        {
            h.Agent.Answer = (_, r) => r.Address.StartsWith("slow", StringComparison.Ordinal)
                ? RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test")
                : RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
            await h.StartAsync();
            slow = await h.CommitAsync(0, ("slow@x.test", "default", "default"));   // committed first, expires at +3h
            fast = await h.CommitAsync(0, ("fast@x.test", "default", "default"));   // fails at once
            await h.IdleAsync();
            await h.AdvanceAsync(TimeSpan.FromHours(3) + M(1), M(30));
            Assert.NotNull(h.Spool.Find(slow)!.FinalizedAt);
        }
        await using (var h = new Harness(schedules, [Queue("default", 1)], dir.Path, clock))
        {
            await h.StartAsync();
            Assert.Equal((Harness.Epoch, Harness.Epoch.AddHours(3)), (h.Spool.Find(fast)!.FinalizedAt, h.Spool.Find(slow)!.FinalizedAt));
            Assert.Equal(1, await h.Spool.PurgeDeadLettersAsync(Harness.Epoch.AddDays(7).AddMinutes(1), CancellationToken.None));
            Assert.Null(h.Spool.Find(fast));
            Assert.NotNull(h.Spool.Find(slow));
        }
        dir.Dispose();
    }
}
