// Scheduler: retry timetable, expiry, notify, priority and aging, slots, isolation, back-pressure and
// recovery, all on a fake clock.
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;
using static Relay.Spool.Tests.Settings;

namespace Relay.Spool.Tests;

public sealed class SchedulerTests
{
    private static RecipientOutcome Greylisted(DeliveryRecipient r) => RecipientOutcome.Temporary(r.Address, 451, "4.7.1", "greylisted", "mx.x.test");

    private static Harness OneQueue(ScheduleSettings schedule, int threads = 10, TimeSpan? aging = null, long? maxSize = null) =>
        new([schedule], [Queue(schedule.QueueName, threads, aging, maxSize)]);

    private static (string, string, string) R(string address, string schedule = "default", string queue = "default") => (address, schedule, queue);

    private static List<TimeSpan> AttemptOffsets(Harness h) => h.Agent.Calls.Select(c => c.At - Harness.Epoch).ToList();

    [Fact]
    public async Task Retry_follows_the_timetable_after_each_failed_attempt()
    {
        await using var h = OneQueue(Schedule("default", "default", [S(30), M(1), M(2)]));
        h.Agent.Answer = (_, r) => Greylisted(r);
        var id = await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();

        await h.AdvanceAsync(S(29));
        Assert.Single(h.Agent.Calls);
        await h.AdvanceAsync(S(1));
        Assert.Equal([S(0), S(30)], AttemptOffsets(h));
        await h.AdvanceAsync(S(59));
        Assert.Equal(2, h.Agent.Calls.Count);
        await h.AdvanceAsync(S(1));
        Assert.Equal([S(0), S(30), S(90)], AttemptOffsets(h));
        var state = h.Spool.Find(id)!.GetRecipient(0);
        Assert.Equal(3, state.Attempts);
        Assert.Equal(Harness.Epoch + S(90) + M(2), state.NextAttemptAt);
        Assert.Equal("4.7.1", state.LastError!.EnhancedStatus);
        Assert.Equal([1, 2, 3], h.Agent.Calls.Select(c => c.Request.Recipients[0].Attempt));
    }

    [Fact]
    public async Task The_last_retry_interval_repeats()
    {
        await using var h = OneQueue(Schedule("default", "default", [S(30), M(1)]));
        h.Agent.Answer = (_, r) => Greylisted(r);
        await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();

        await h.AdvanceAsync(M(5.5), S(5));
        // 0, +30s, then every minute: 1:30, 2:30, 3:30, 4:30, 5:30
        Assert.Equal([S(0), S(30), S(90), S(150), S(210), S(270), S(330)], AttemptOffsets(h));
    }

    [Fact]
    public async Task Ttl_expiry_fails_the_recipient_with_4_4_7_and_keeps_the_message_as_dead_letter()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(10)], expiry: new Expiry.Ttl(M(30))));
        h.Agent.Answer = (_, r) => Greylisted(r);
        var id = await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();

        await h.AdvanceAsync(M(29), M(1));
        Assert.Equal(RecipientStatus.Pending, h.Spool.Find(id)!.GetRecipient(0).Status);
        await h.AdvanceAsync(M(3), M(1));

        Assert.Equal([M(0), M(10), M(20)], AttemptOffsets(h));   // no attempt at or after 30m
        var state = h.Spool.Find(id)!.GetRecipient(0);
        Assert.Equal(RecipientStatus.Expired, state.Status);
        Assert.Equal("4.4.7", state.LastError!.EnhancedStatus);
        var report = Assert.Single(h.Reports.Final);
        Assert.Equal(RecipientStatus.Expired, report.Recipients.Single().Status);
        Assert.Contains("greylisted", report.Recipients.Single().LastError!.Text);
        Assert.NotNull(h.Spool.Find(id)!.FinalizedAt);   // dead letter, kept for retention
        Assert.Equal(0, h.Spool.CountPending("default"));
    }

    [Fact]
    public async Task Max_attempts_expiry_fails_with_the_last_errors_status()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)], expiry: new Expiry.Attempts(3)));
        h.Agent.Answer = (_, r) => RecipientOutcome.Temporary(r.Address, 452, "4.2.2", "mailbox full", "mx.x.test");
        var id = await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();

        await h.AdvanceAsync(M(10), S(10));

        Assert.Equal(3, h.Agent.Calls.Count);
        var state = h.Spool.Find(id)!.GetRecipient(0);
        Assert.Equal((RecipientStatus.Expired, 3, "4.2.2", 452), (state.Status, state.Attempts, state.LastError!.EnhancedStatus, state.LastError.Code));
        Assert.Equal(RecipientStatus.Expired, Assert.Single(h.Reports.Final).Recipients.Single().Status);
    }

    [Fact]
    public async Task Permanent_failure_fails_at_once_and_delivered_recipients_are_reported_and_removed()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)]));
        h.Agent.Answer = (_, r) => r.Address.StartsWith("bad")
            ? RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user")
            : RecipientOutcome.Delivered(r.Address);
        var ok = await h.CommitAsync(0, R("good@x.test"));
        var bad = await h.CommitAsync(0, R("bad@x.test"));
        await h.StartAsync();
        await h.AdvanceAsync(M(5), M(1));

        Assert.Equal(2, h.Agent.Calls.Count);
        Assert.Null(h.Spool.Find(ok));
        Assert.Equal(RecipientStatus.Failed, h.Spool.Find(bad)!.GetRecipient(0).Status);
        Assert.Equal(2, h.Reports.Final.Count);
    }

    [Fact]
    public async Task Each_notify_time_sends_one_delay_notification()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(5)], notify: [M(10), M(30)]));
        h.Agent.Answer = (_, r) => Greylisted(r);
        var id = await h.CommitAsync(0, R("a@x.test"), R("b@x.test"));
        await h.StartAsync();

        await h.AdvanceAsync(M(45), M(1));

        Assert.Equal([M(10), M(30)], h.Reports.Delayed.Select(d => d.At - Harness.Epoch));
        Assert.All(h.Reports.Delayed, d => Assert.Equal(["a@x.test", "b@x.test"], d.Report.Recipients.Select(r => r.Entry.Address)));
        Assert.Equal(Harness.Epoch + TimeSpan.FromDays(5), h.Reports.Delayed.First().Report.Recipients[0].WillRetryUntil);
        Assert.Equal(3, h.Spool.Find(id)!.GetRecipient(0).NotifySent);
    }

    [Fact]
    public async Task A_final_report_carries_the_attempts_time_and_whether_the_next_hop_lacked_dsn()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)]));
        h.Agent.Answer = (req, r) => h.Agent.Calls.Count(c => c.Request.MessageId == req.MessageId) < 2
            ? Greylisted(r)
            : RecipientOutcome.Delivered(r.Address, "mx.x.test") with { RemoteLacksDsn = r.Address.StartsWith("old") };
        var old = await h.CommitAsync(0, R("old@x.test"));
        var modern = await h.CommitAsync(0, R("new@y.test"));
        await h.StartAsync();
        await h.AdvanceAsync(M(3), S(10));

        Assert.Equal(2, h.Reports.Final.Count);
        var relayed = h.Reports.Final.Single(r => r.MessageId == old).Recipients.Single();
        var delivered = h.Reports.Final.Single(r => r.MessageId == modern).Recipients.Single();
        Assert.Equal((RecipientStatus.Delivered, true, Harness.Epoch + M(1)), (relayed.Status, relayed.Relayed, relayed.LastAttemptAt));
        Assert.Equal((RecipientStatus.Delivered, false, Harness.Epoch + M(1)), (delivered.Status, delivered.Relayed, delivered.LastAttemptAt));
    }

    [Fact]
    public async Task Expiry_and_delay_reports_carry_the_real_last_attempt_time()
    {
        // Attempts at 0, 10m, 20m; notify at 15m (after the 10m attempt); TTL 30m passes while it waits for 30m.
        await using var h = OneQueue(Schedule("default", "default", [M(10)], notify: [M(15)], expiry: new Expiry.Ttl(M(30))));
        h.Agent.Answer = (_, r) => Greylisted(r);
        await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();
        await h.AdvanceAsync(M(35), M(1));

        Assert.Equal([M(0), M(10), M(20)], AttemptOffsets(h));
        var delayed = Assert.Single(h.Reports.Delayed).Report.Recipients.Single();
        Assert.Equal(Harness.Epoch + M(10), delayed.LastAttemptAt);
        var expired = Assert.Single(h.Reports.Final).Recipients.Single();
        Assert.Equal(RecipientStatus.Expired, expired.Status);
        Assert.Equal(Harness.Epoch + M(20), expired.LastAttemptAt);   // not the expiry time (30m)
        Assert.False(expired.Relayed);
    }

    [Fact]
    public async Task A_final_report_repeated_later_has_no_attempt_time_and_says_delivered()
    {
        // In memory only (README): a report the DSN stage refused is repeated from the spool's state alone.
        await using var h = OneQueue(Schedule("default", "default", [M(1)]));
        var refused = new List<DeliveryReport>();
        h.Reports.RefuseFinal = r => { if (refused.Count > 0) return null; refused.Add(r); return new IOException("spool full"); };
        h.Agent.Answer = (_, r) => RecipientOutcome.Delivered(r.Address) with { RemoteLacksDsn = true };
        await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();
        Assert.True(Assert.Single(refused).Recipients.Single().Relayed);

        await h.AdvanceAsync(M(2), S(10));   // the scheduler reports again a minute later

        var again = Assert.Single(h.Reports.Final).Recipients.Single();
        Assert.Equal((RecipientStatus.Delivered, false, (DateTimeOffset?)null), (again.Status, again.Relayed, again.LastAttemptAt));
    }

    [Fact]
    public async Task A_notification_sent_before_a_restart_is_not_sent_again()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(5)], notify: [M(10), M(30)]));
        h.Agent.Answer = (_, r) => Greylisted(r);
        await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();
        await h.AdvanceAsync(M(15), M(1));
        Assert.Single(h.Reports.Delayed);

        var agent = new ScriptedAgent { Answer = (_, r) => Greylisted(r) };
        await using var h2 = await h.RestartAsync(agent);
        await h2.StartAsync();
        await h2.AdvanceAsync(M(30), M(1));

        Assert.Equal([M(30)], h2.Reports.Delayed.Select(d => d.At - Harness.Epoch));
    }

    [Fact]
    public async Task Higher_priority_goes_first_and_equal_priority_is_first_in_first_out()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)]), threads: 1);
        var order = new List<(int Priority, string Name)> { (0, "a"), (5, "b"), (0, "c"), (9, "d"), (5, "e"), (-3, "f"), (0, "g") };
        foreach (var (p, name) in order) await h.CommitAsync(p, R($"{name}@x.test"));
        await h.StartAsync();

        var delivered = h.Agent.Calls.Select(c => c.Request.Recipients[0].Address[..1]).ToList();
        Assert.Equal(["d", "b", "e", "a", "c", "g", "f"], delivered);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Aging_lets_low_priority_out_under_a_constant_stream_of_urgent_mail(bool aging)
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)]), threads: 1, aging: aging ? M(1) : TimeSpan.Zero);
        var permits = new SemaphoreSlim(0);
        h.Agent.Hold = (_, ct) => permits.WaitAsync(ct);
        await h.CommitAsync(0, R("low@x.test"));
        await h.CommitAsync(9, R("urgent0@x.test"));
        h.Scheduler.Start();
        await h.Scheduler.Ready;

        // Two urgent messages arrive per delivery slot: urgent mail alone would saturate the queue forever.
        var lowAt = -1;
        for (var tick = 1; tick <= 60 && lowAt < 0; tick++)
        {
            await h.CommitAsync(9, R($"urgent{tick}a@x.test"));
            await h.CommitAsync(9, R($"urgent{tick}b@x.test"));
            permits.Release();
            await Eventually.TrueAsync(() => h.Agent.Completed == tick);
            if (h.Agent.Delivered("low@x.test").Any()) lowAt = tick;
            h.Clock.Advance(S(30));
        }

        if (aging)
        {
            // Everything waiting ages, urgent mail too: low (0) overtakes urgent (9) once it has waited 9 aging
            // steps (9 min) longer than the oldest urgent message still queued. With 2 arrivals per delivery
            // the oldest queued urgent one at tick k arrived at tick k/2, so: k·30s − (k/2)·30s ≥ 9 min ⇒ k ≈ 36.
            Assert.InRange(lowAt, 35, 39);
        }
        else Assert.Equal(-1, lowAt);   // strict priority starves it
        await h.Scheduler.StopAsync();
    }

    [Fact]
    public async Task Threads_per_node_is_never_exceeded()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)]), threads: 3);
        var permits = new SemaphoreSlim(0);
        h.Agent.Hold = (_, ct) => permits.WaitAsync(ct);
        for (var i = 0; i < 20; i++) await h.CommitAsync(0, R($"r{i}@d{i}.test"));
        h.Scheduler.Start();

        await Eventually.TrueAsync(() => h.Agent.Current == 3);
        Assert.Equal(3, h.Scheduler.GetQueueStats().Single().InFlight);
        for (var i = 0; i < 20; i++)
        {
            permits.Release();
            await Eventually.TrueAsync(() => h.Agent.Completed == i + 1);
        }
        await h.IdleAsync();
        Assert.Equal(20, h.Agent.Calls.Count);
        Assert.Equal(3, h.Agent.MaxConcurrent);
        Assert.Equal(0, h.Spool.CountPending("default"));
    }

    [Fact]
    public async Task A_saturated_bulk_queue_does_not_delay_urgent_mail()
    {
        await using var h = new Harness(
            [Schedule("bulk", "bulk", [M(1)]), Schedule("urgent", "urgent", [M(1)])],
            [Queue("bulk", 2), Queue("urgent", 2)]);
        var blockBulk = new TaskCompletionSource();
        h.Agent.Hold = (request, ct) => request.Queue == "bulk" ? blockBulk.Task.WaitAsync(ct) : Task.CompletedTask;
        for (var i = 0; i < 10; i++) await h.CommitAsync(0, R($"b{i}@bulk{i}.test", "bulk", "bulk"));
        h.Scheduler.Start();
        await Eventually.TrueAsync(() => h.Agent.Current == 2);

        var urgent = await h.CommitAsync(9, R("u@x.test", "urgent", "urgent"));

        await Eventually.TrueAsync(() => h.Spool.Find(urgent) is null, because: "urgent delivered while bulk is stuck");
        Assert.Equal(2, h.Scheduler.GetQueueStats().Single(q => q.Name == "bulk").InFlight);
        Assert.Equal(10, h.Spool.CountPending("bulk"));
        blockBulk.SetResult();
        await h.IdleAsync();
        Assert.Equal(0, h.Spool.CountPending("bulk"));
    }

    [Fact]
    public async Task Max_size_pushes_back_when_the_queue_is_full_and_frees_up_after_delivery()
    {
        await using var h = new Harness(
            [Schedule("small", "small", [M(1)]), Schedule("other", "other", [M(1)])],
            [Queue("small", 1, maxSize: 3), Queue("other", 1)]);
        Assert.True(h.Scheduler.HasRoom("small"));
        await h.CommitAsync(0, R("a@x.test", "small", "small"), R("b@y.test", "small", "small"));
        Assert.True(h.Scheduler.HasRoom("small"));
        await h.CommitAsync(0, R("c@x.test", "small", "small"));

        Assert.False(h.Scheduler.HasRoom("small"));
        Assert.True(h.Scheduler.HasRoom("other"));
        await h.StartAsync();
        Assert.True(h.Scheduler.HasRoom("small"));
    }

    [Fact]
    public async Task After_a_restart_pending_recipients_are_retried_and_delivered_ones_never_resent()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(5)]));
        h.Agent.Answer = (_, r) => r.Address.StartsWith("later") ? Greylisted(r) : RecipientOutcome.Delivered(r.Address);
        var id = await h.CommitAsync(0, R("now@x.test"), R("later@y.test"));
        var other = await h.CommitAsync(0, R("done@z.test"));
        await h.StartAsync();
        Assert.Equal(3, h.Agent.Calls.Sum(c => c.Request.Recipients.Count));

        var agent = new ScriptedAgent();
        await using var h2 = await h.RestartAsync(agent);
        await h2.StartAsync();
        Assert.Empty(agent.Calls);   // "later" waits for its retry time even across the restart
        await h2.AdvanceAsync(M(5), M(1));

        var call = Assert.Single(agent.Calls);
        Assert.Equal(["later@y.test"], call.Request.Recipients.Select(r => r.Address));
        Assert.Equal(2, call.Request.Recipients[0].Attempt);
        Assert.Null(h2.Spool.Find(id));
        Assert.Null(h2.Spool.Find(other));
    }

    [Fact]
    public async Task Recipients_in_flight_at_a_crash_are_pending_again_after_restart()
    {
        // A crash after the attempt but before its outcome was recorded leaves the recipient pending with
        // no new state, which is exactly a spool that never heard of the attempt.
        using var dir = new TempDir();
        string id;
        await using (var spool = FileSpool.Open(Path.Combine(dir.Path, "spool"), null, new Microsoft.Extensions.Time.Testing.FakeTimeProvider(Harness.Epoch)))
        {
            id = await Messages.CommitAsync(spool, Harness.Epoch, 0, R("a@x.test"), R("b@x.test"));
            await spool.UpdateRecipientsAsync(id, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true)], default);
        }
        await using var h = new Harness([Schedule("default", "default", [M(1)])], [Queue("default", 2)], dir.Path);
        await h.StartAsync();
        Assert.Equal(["b@x.test"], h.Agent.Calls.SelectMany(c => c.Request.Recipients).Select(r => r.Address));
        Assert.Null(h.Spool.Find(id));
    }

    [Fact]
    public async Task An_agent_that_throws_counts_as_a_temporary_failure_and_frees_its_slot()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(2)]), threads: 1);
        var first = true;
        h.Agent.Throw = _ => { if (!first) return null; first = false; return new InvalidOperationException("boom"); };
        var a = await h.CommitAsync(1, R("a@x.test"));
        var b = await h.CommitAsync(0, R("b@y.test"));
        await h.StartAsync();

        Assert.Null(h.Spool.Find(b));   // the slot came back: b went out after a's crash
        var state = h.Spool.Find(a)!.GetRecipient(0);
        Assert.Equal((RecipientStatus.Pending, 1, "4.4.0"), (state.Status, state.Attempts, state.LastError!.EnhancedStatus));
        Assert.Equal(0, h.Scheduler.GetQueueStats().Single().InFlight);
        await h.AdvanceAsync(M(2), M(1));
        Assert.Null(h.Spool.Find(a));
    }

    [Fact]
    public async Task Recipients_of_one_message_for_the_same_domain_and_schedule_travel_together()
    {
        await using var h = new Harness(
            [Schedule("default", "default", [M(1)]), Schedule("slow", "default", [M(1)])], [Queue("default", 5)]);
        await h.CommitAsync(0, R("a@x.test"), R("b@X.test"), R("c@y.test"), R("d@x.test", "slow"));
        await h.StartAsync();

        var groups = h.Agent.Calls.Select(c => string.Join(",", c.Request.Recipients.Select(r => r.Address))).OrderBy(g => g).ToList();
        Assert.Equal(["a@x.test,b@X.test", "c@y.test", "d@x.test"], groups);
    }

    [Fact]
    public async Task A_corrupt_message_is_quarantined_without_blocking_the_queue()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)]), threads: 1);
        var bad = await h.CommitAsync(5, R("a@x.test"));
        var good = await h.CommitAsync(0, R("b@x.test"));
        SpoolDamage.CorruptInlineBody(Path.Combine(h.Dir, "spool"), bad);
        await h.StartAsync();

        Assert.Null(h.Spool.Find(good));
        Assert.Equal(["b@x.test"], h.Agent.Calls.Select(c => c.Request.Recipients[0].Address));
        Assert.True(File.Exists(Path.Combine(h.Dir, "spool", "quarantine", bad)));
        Assert.Equal(0, h.Scheduler.GetQueueStats().Single().InFlight);
    }

    [Fact]
    public async Task Commits_wake_a_running_scheduler()
    {
        await using var h = OneQueue(Schedule("default", "default", [M(1)]));
        await h.StartAsync();
        var id = await h.CommitAsync(0, R("a@x.test"));
        await Eventually.TrueAsync(() => h.Spool.Find(id) is null);
        Assert.Single(h.Agent.Calls);
    }

    [Fact]
    public async Task A_wake_that_lands_while_the_loop_drains_its_events_is_not_lost()
    {
        // Regression (rare WhenIdleAsync timeouts, a missed timer after a clock jump): the loop cleared the wake
        // flag before draining its events, so a Wake() landing in between had its token drained in the same pass
        // while the flag stayed set; every later Wake() (timers, commits, finished work) was swallowed and the
        // loop never counted as idle again. A posted action that calls Wake() hits that window every time.
        await using var h = OneQueue(Schedule("default", "default", [M(1)], expiry: new Expiry.Ttl(M(30))));
        h.Agent.Answer = (_, r) => Greylisted(r);
        var id = await h.CommitAsync(0, R("a@x.test"));
        await h.StartAsync();
        Assert.Single(h.Agent.Calls);

        h.Scheduler.Post(h.Scheduler.Wake);
        await h.IdleAsync();
        h.Clock.Advance(M(1));                             // the retry timer only calls Wake()
        await Eventually.TrueAsync(() => h.Agent.Calls.Count == 2, because: h.Scheduler.DebugState);
        await h.IdleAsync();

        for (var round = 0; round < 20; round++)           // and the same race from other threads
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromMilliseconds(20));
            await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
            {
                while (!stop.IsCancellationRequested) h.Scheduler.Wake();
            })));
            await h.IdleAsync();
        }
        h.Agent.Answer = (_, r) => RecipientOutcome.Delivered(r.Address, "mx.test");
        h.Clock.Advance(M(1));
        await Eventually.TrueAsync(() => h.Spool.Find(id) is null, because: h.Scheduler.DebugState);
        Assert.Equal(3, h.Agent.Calls.Count);
    }
}
