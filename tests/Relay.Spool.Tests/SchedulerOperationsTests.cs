// What operators do to a running scheduler: reload [queue] (schedules kept, removed ones moved to the fallback,
// queues added and resized), retry and cancel one message (IQueueControl), queue stats, drain at shutdown.
using Relay.Config;
using Relay.Config.Settings;
using Relay.Scheduler;
using static Relay.Spool.Tests.Settings;

namespace Relay.Spool.Tests;

public sealed class SchedulerOperationsTests
{
    private static RecipientOutcome Greylisted(DeliveryRecipient r) => RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test");

    /// <summary>A [queue] section through the real loader (the strategy's fallback is the last schedule named in <c>else</c>).</summary>
    private static QueueSettings QueueFrom(string toml)
    {
        var loaded = ConfigLoader.Parse(toml, "reload.toml", Path.GetTempPath());
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        return loaded.Settings!.Queue;
    }

    private const string Before = """
        [queue.strategy]
        schedule = [ { if = "priority >= 6", then = "'bulk'" }, { else = "'default'" } ]
        [queue.schedule.default]
        retry = ["1h"]
        expire = "5d"
        [queue.schedule.bulk]
        retry = ["1h"]
        [queue.virtual.default]
        threads-per-node = 1
        [queue.virtual.bulk]
        threads-per-node = 1
        """;

    private static Harness Start(string? dir = null, Microsoft.Extensions.Time.Testing.FakeTimeProvider? clock = null) => new(
        [Schedule("default", "default", [TimeSpan.FromHours(1)]), Schedule("bulk", "bulk", [TimeSpan.FromHours(1)])],
        [Queue("default", 1), Queue("bulk", 1)], dir, clock);

    [Fact]
    public async Task A_kept_schedule_keeps_its_recipients_and_its_new_expire_applies_to_them()
    {
        await using var h = Start();
        h.Agent.Answer = (_, r) => Greylisted(r);
        await h.StartAsync();
        var id = await h.CommitAsync(0, ("a@x.test", "default", "default"));
        await h.IdleAsync();
        Assert.Single(h.Agent.Calls);

        var result = await h.Scheduler.ReconfigureAsync(QueueFrom(Before.Replace("expire = \"5d\"", "expire = \"30m\"")));
        Assert.Equal(0, result.RecipientsMoved);
        Assert.Equal("default", h.Spool.Find(id)!.GetRecipient(0).Schedule);

        await h.AdvanceAsync(TimeSpan.FromMinutes(31), TimeSpan.FromMinutes(1));
        var report = Assert.Single(h.Reports.Final);
        Assert.Equal(RecipientStatus.Expired, report.Recipients.Single().Status);   // the new 30m, not the old 5d
        Assert.Single(h.Agent.Calls);
    }

    [Fact]
    public async Task Removing_a_schedule_moves_its_queued_recipients_to_the_fallback_durably()
    {
        var dir = new TempDir();
        string id;
        await using (var h = Start(dir.Path))
        {
            h.Agent.Answer = (_, r) => Greylisted(r);
            await h.StartAsync();
            id = await h.CommitAsync(7, ("a@x.test", "bulk", "bulk"));
            await h.IdleAsync();
            Assert.Equal(1, h.Spool.CountPending("bulk"));

            // bulk (schedule and queue) is gone; the strategy's else is 'default'.
            var result = await h.Scheduler.ReconfigureAsync(QueueFrom("""
                [queue.strategy]
                schedule = [ { else = "'default'" } ]
                [queue.schedule.default]
                retry = ["1h"]
                [queue.virtual.default]
                threads-per-node = 1
                """));
            Assert.Equal(1, result.RecipientsMoved);
            Assert.Equal(["bulk"], result.QueuesRemoved);
            var moved = h.Spool.Find(id)!.GetRecipient(0);
            Assert.Equal(("default", "default"), (moved.Schedule, moved.Queue));
            Assert.Equal(1, h.Spool.CountPending("default"));
            Assert.Equal(0, h.Spool.CountPending("bulk"));
            Assert.Equal(["default"], h.Scheduler.GetQueueStats().Select(q => q.Name));
        }

        // The move is in the journal: a restart (even with the old config) keeps it, and the next attempt goes out
        // on the default queue.
        await using (var again = Start(dir.Path))
        {
            await again.StartAsync();
            var kept = again.Spool.Find(id)!.GetRecipient(0);
            Assert.Equal(("default", "default"), (kept.Schedule, kept.Queue));
            await again.AdvanceAsync(TimeSpan.FromHours(1), TimeSpan.FromMinutes(10));
            var call = Assert.Single(again.Agent.Calls);
            Assert.Equal(("default", "default"), (call.Request.Schedule, call.Request.Queue));
        }
        dir.Dispose();
    }

    [Fact]
    public async Task An_added_queue_appears_and_threads_per_node_changes_take_effect()
    {
        await using var h = Start();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Agent.Hold = (_, ct) => release.Task.WaitAsync(ct);
        await h.StartAsync();
        for (var i = 0; i < 4; i++) await h.CommitAsync(0, ($"u{i}@d{i}.test", "default", "default"));
        await Eventually.TrueAsync(() => h.Agent.Current == 1, TimeSpan.FromSeconds(30), "one delivery (threads-per-node 1)");

        await h.Scheduler.ReconfigureAsync(QueueFrom(Before
            .Replace("[queue.virtual.default]\nthreads-per-node = 1", "[queue.virtual.default]\nthreads-per-node = 3")
            + "\n[queue.virtual.extra]\nthreads-per-node = 2\nmax-size = 1\n[queue.schedule.x]\nqueue-name = \"extra\"\n"));
        await Eventually.TrueAsync(() => h.Agent.Current == 3, TimeSpan.FromSeconds(30), "three deliveries at once after the reload");
        Assert.Equal(3, h.Agent.MaxConcurrent);
        var stats = h.Scheduler.GetQueueStats().ToDictionary(q => q.Name);
        Assert.Equal(["bulk", "default", "extra"], stats.Keys.Order());
        Assert.Equal(3, stats["default"].ThreadsPerNode);
        Assert.Equal((2, 1L), (stats["extra"].ThreadsPerNode, stats["extra"].MaxSize));
        release.SetResult();
        await h.IdleAsync();
    }

    [Fact]
    public async Task Queue_stats_give_the_oldest_pending_arrival_per_queue()
    {
        await using var h = Start();
        h.Agent.Answer = (_, r) => Greylisted(r);
        await h.StartAsync();
        var first = await h.CommitAsync(0, ("a@x.test", "default", "default"));
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        await h.CommitAsync(0, ("b@x.test", "default", "default"));
        await h.IdleAsync();
        var stats = h.Scheduler.GetQueueStats().ToDictionary(q => q.Name);
        Assert.Equal(Harness.Epoch, stats["default"].OldestPendingArrival);
        Assert.Null(stats["bulk"].OldestPendingArrival);

        await h.Scheduler.CancelAsync(first, bounce: false, CancellationToken.None);
        Assert.Equal(Harness.Epoch.AddMinutes(5), h.Scheduler.GetQueueStats().Single(q => q.Name == "default").OldestPendingArrival);
    }

    [Fact]
    public async Task A_message_stuck_in_front_does_not_keep_every_finished_one_in_the_oldest_list()
    {
        await using var h = Start();
        h.Agent.Answer = (req, r) => r.Address == "stuck@x.test" ? Greylisted(r) : RecipientOutcome.Delivered(r.Address, "mx.test");
        await h.StartAsync();
        var stuck = await h.CommitAsync(0, ("stuck@x.test", "default", "default"));
        await Task.WhenAll(Enumerable.Range(0, 1500).Select(i => h.CommitAsync(0, ($"u{i}@y.test", "default", "default"))));
        await h.IdleAsync();
        Assert.Equal(1, h.Spool.CountPending("default"));
        await h.AdvanceAsync(TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1));   // housekeeping compacts the list
        Assert.InRange(h.Scheduler.TrackedArrivals("default"), 1, 2 * 1 + 1024);
        Assert.Equal(Harness.Epoch, h.Scheduler.GetQueueStats().Single(q => q.Name == "default").OldestPendingArrival);
        Assert.NotNull(h.Spool.Find(stuck));
    }

    [Fact]
    public async Task Retry_of_a_dead_letter_requeues_it_under_the_same_id_and_survives_a_restart()
    {
        var dir = new TempDir();
        string id;
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(Harness.Epoch);
        await using (var h = Start(dir.Path, clock))
        {
            h.Agent.Answer = (_, r) => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
            await h.StartAsync();
            id = await h.CommitAsync(0, ("a@x.test", "default", "default"));
            await h.IdleAsync();
            Assert.NotNull(h.Spool.Find(id)!.FinalizedAt);   // a dead letter

            h.Agent.Hold = (_, ct) => Task.Delay(Timeout.Infinite, ct);   // the retry's attempt never ends before the restart
            h.Clock.Advance(TimeSpan.FromHours(2));
            var result = await h.Scheduler.RetryAsync(id, CancellationToken.None);
            Assert.Equal(new ControlResult(ControlOutcome.Done, 1, id), result);
            var m = h.Spool.Find(id)!;
            Assert.Null(m.FinalizedAt);
            Assert.Equal(Harness.Epoch.AddHours(2), m.ArrivedAt);   // its queue time starts over
            await Eventually.TrueAsync(() => h.Agent.Calls.Count == 2, TimeSpan.FromSeconds(30), "a new attempt");
            Assert.Equal(id, h.Agent.Calls.Last().Request.MessageId);
        }
        await using (var again = Start(dir.Path, clock))
        {
            await again.StartAsync();
            // The re-open was durable: the restarted node retries it (a dead letter would just sit there).
            Assert.Contains(again.Agent.Calls, c => c.Request.MessageId == id);
            await again.IdleAsync();
            Assert.Null(again.Spool.Find(id));   // delivered this time (the default answer), so gone
        }
        dir.Dispose();
    }

    [Fact]
    public async Task Retry_of_a_message_still_being_finished_waits_for_it_and_requeues_the_dead_letter()
    {
        // The bounce's report is refused once, so the message sits final but unfinished until the scheduler
        // reports again a minute later: the "being finished" moment, stretched. A retry asked in it (a webhook
        // consumer reacting to "bounced") must wait and requeue, not answer "try again".
        await using var h = Start();
        h.Agent.Answer = (_, r) => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
        var refused = 0;
        h.Reports.RefuseFinal = _ => Interlocked.Increment(ref refused) == 1 ? new IOException("spool full") : null;
        await h.StartAsync();
        var id = await h.CommitAsync(0, ("a@x.test", "default", "default"));
        await h.IdleAsync();
        Assert.Equal(RecipientStatus.Failed, h.Spool.Find(id)!.GetRecipient(0).Status);
        Assert.Null(h.Spool.Find(id)!.FinalizedAt);   // final, not yet finished

        h.Agent.Answer = (_, r) => RecipientOutcome.Delivered(r.Address, "mx.x.test");
        var retry = h.Scheduler.RetryAsync(id, CancellationToken.None);   // without the wait: NothingToDo at once
        await h.AdvanceAsync(TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(2));   // the report goes through; a dead letter now

        Assert.Equal(new ControlResult(ControlOutcome.Done, 1, id), await retry.WaitAsync(TimeSpan.FromSeconds(30)));
        await Eventually.TrueAsync(() => h.Spool.Find(id) is null, TimeSpan.FromSeconds(30), "the requeued message delivered");
    }

    [Fact]
    public async Task Cancel_during_a_delivery_drops_its_outcome_and_bounce_reports_the_pending_recipients()
    {
        await using var h = Start();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Agent.Hold = (_, ct) => release.Task.WaitAsync(ct);
        h.Agent.Answer = (_, r) => RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.x.test");
        await h.StartAsync();
        var busy = await h.CommitAsync(0, ("a@x.test", "default", "default"));
        await Eventually.TrueAsync(() => h.Agent.Current == 1, TimeSpan.FromSeconds(30), "the delivery in flight");

        var cancelled = await h.Scheduler.CancelAsync(busy, bounce: false, CancellationToken.None);
        Assert.Equal(ControlOutcome.Done, cancelled.Outcome);
        Assert.Null(h.Spool.Find(busy));
        release.SetResult();   // the 550 comes back after the cancel: no failure report for it
        await h.IdleAsync();
        Assert.Empty(h.Reports.Final);
        Assert.Equal(0, h.Spool.CountPending("default"));

        h.Agent.Hold = null;
        h.Agent.Answer = (_, r) => Greylisted(r);
        var waiting = await h.CommitAsync(0, ("b@y.test", "default", "default"), ("c@y.test", "default", "default"));
        await h.IdleAsync();
        var bounced = await h.Scheduler.CancelAsync(waiting, bounce: true, CancellationToken.None);
        Assert.Equal(2, bounced.Recipients);
        var report = Assert.Single(h.Reports.Final);
        Assert.All(report.Recipients, r => Assert.Equal(("5.0.0", RecipientStatus.Failed), (r.LastError!.EnhancedStatus, r.Status)));
        Assert.Null(h.Spool.Find(waiting));
        Assert.Equal(ControlOutcome.NotFound, (await h.Scheduler.CancelAsync(waiting, false, CancellationToken.None)).Outcome);
        Assert.Equal(ControlOutcome.NotFound, (await h.Scheduler.RetryAsync(waiting, CancellationToken.None)).Outcome);
    }

    [Fact]
    public async Task Drain_lets_the_delivery_in_flight_finish_and_starts_nothing_new()
    {
        var dir = new TempDir();
        string first, second;
        await using (var h = Start(dir.Path))
        {
            var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            h.Agent.Hold = (_, ct) => release.Task.WaitAsync(ct);
            await h.StartAsync();
            first = await h.CommitAsync(0, ("a@x.test", "default", "default"));
            await Eventually.TrueAsync(() => h.Agent.Current == 1, TimeSpan.FromSeconds(30), "the first delivery in flight");
            second = await h.CommitAsync(0, ("b@x.test", "default", "default"));   // waits for the single slot

            var drain = h.Scheduler.DrainAsync(CancellationToken.None);
            Assert.False(drain.IsCompleted);
            release.SetResult();
            Assert.True(await drain.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Single(h.Agent.Calls);                  // the second never started
            Assert.Null(h.Spool.Find(first));              // the first is recorded as delivered (and removed)
            Assert.NotNull(h.Spool.Find(second));
        }
        await using (var again = Start(dir.Path))
        {
            await again.StartAsync();
            Assert.Equal([second], again.Agent.Calls.Select(c => c.Request.MessageId));   // the first is not sent again
        }
        dir.Dispose();
    }
}
