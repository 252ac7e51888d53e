// QueueScheduler: decides what goes out when. One loop owns every counter, heap and timer (Postfix qmgr,
// Stalwart queue manager); delivery and report tasks run outside it and always post exactly one result back.
// Wake-ups (spool commits, timers, finished work) are coalescing signals, not queued payloads.
using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Config.Settings;
using Relay.Spool;
// The scheduler's per-message state lives in the spool's entry (scheduler-owned fields), not in a second object.
using Job = Relay.Spool.SpooledMessage;

namespace Relay.Scheduler;

public sealed partial class QueueScheduler : IAsyncDisposable, IQueueControl
{
    private const int IngestBatch = 4096;
    private static readonly TimeSpan SettleRetry = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan Housekeeping = TimeSpan.FromMinutes(1);

    private readonly ISpoolStore _spool;
    private readonly IDeliveryAgent _agent;
    private readonly IDeliveryReports _reports;        // drops reports about cancelled messages (Operations)
    private readonly IDeliveryReports _reportsDirect;
    private readonly TimeProvider _clock;
    private readonly ILogger _log;
    // Replaced by a reload (on the loop); read from other threads by HasRoom / GetQueueStats.
    private volatile IReadOnlyDictionary<string, ScheduleSettings> _schedules;
    private volatile ScheduleSettings? _fallback;
    private readonly Dictionary<string, VirtualQueue> _queues = new(StringComparer.Ordinal);
    private volatile IReadOnlyDictionary<string, VirtualQueueSettings> _queueSettings;
    private readonly Dictionary<string, ScheduleSettings> _fallbacks = new(StringComparer.Ordinal);
    private readonly PriorityQueue<TimerItem, long> _timers = new();
    private readonly Channel<Action> _events = Channel.CreateUnbounded<Action>();
    private readonly List<TaskCompletionSource> _idleWaiters = [];
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stopping = new();
    private readonly ITimer _timer;
    private long _armedFor = long.MaxValue;
    private long _nextHousekeeping;
    private int _wakePending;
    private int _outstanding;
    private Task? _loop;
    private long _startedAt;
    private int _jobCount;
    private bool _presized;

    public QueueScheduler(
        ISpoolStore spool,
        IReadOnlyDictionary<string, ScheduleSettings> schedules,
        IReadOnlyDictionary<string, VirtualQueueSettings> queues,
        IDeliveryAgent agent,
        IDeliveryReports reports,
        TimeProvider clock,
        ILogger? logger = null)
    {
        _spool = spool;
        _schedules = schedules;
        _queueSettings = queues;
        _agent = agent;
        _reportsDirect = reports;
        _reports = new LiveReports(reports, this);
        _clock = clock;
        _log = logger ?? NullLogger.Instance;
        foreach (var (name, settings) in queues) _queues[name] = new VirtualQueue(settings);
        _queueView = new Dictionary<string, VirtualQueue>(_queues, StringComparer.Ordinal);
        _consumeWake = ConsumeWake;
        _timer = clock.CreateTimer(_ => TimerFired(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _spool.Committed += Wake;
    }

    /// <summary>Built from the validated config's <c>[queue]</c> section.</summary>
    public QueueScheduler(ISpoolStore spool, QueueSettings settings, IDeliveryAgent agent, IDeliveryReports reports,
                          TimeProvider clock, ILogger? logger = null)
        : this(spool, settings.Schedules, settings.VirtualQueues, agent, reports, clock, logger) => _fallback = settings.Strategy.Fallback;

    /// <summary>Completes once every message recovered from the spool at start is scheduled.</summary>
    public Task Ready => _ready.Task;

    /// <summary>Starts the loop: recovery (every pending recipient is queued, delivered ones never) then scheduling.</summary>
    public void Start()
    {
        if (_loop is not null) throw new InvalidOperationException("already started");
        _startedAt = Stopwatch.GetTimestamp();
        _nextHousekeeping = _clock.GetUtcNow().UtcTicks + Housekeeping.Ticks;
        _loop = Task.Run(LoopAsync);
        Wake();
    }

    /// <summary>
    /// Completes when the loop has nothing left to do right now: no work in flight, nothing due, nothing to
    /// ingest. Tests call it after advancing a fake clock instead of sleeping.
    /// </summary>
    public Task WhenIdleAsync()
    {
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() => _idleWaiters.Add(tcs));
        return tcs.Task;
    }

    /// <summary>For diagnostics (a test that times out prints it): the loop's counters, read racily.</summary>
    internal string DebugState =>
        $"outstanding={Volatile.Read(ref _outstanding)} wake={Volatile.Read(ref _wakePending)} events={_events.Reader.Count} " +
        $"timers={_timers.Count} loop={_loop?.Status} ready={_ready.Task.Status}";

    /// <summary>Coalescing wake-up: many calls before the loop runs cause one pass.</summary>
    public void Wake()
    {
        if (Interlocked.Exchange(ref _wakePending, 1) == 0) _events.Writer.TryWrite(_consumeWake);
    }

    // The flag is cleared when its token is read, never before: a Wake() that sets the flag always finds its
    // token still unread (this pass or the next runs after it), and one that finds the flag set knows the same.
    // Clearing it at the top of the pass lost wake-ups: a token written after the clear but drained in the same
    // pass left the flag set with no token behind it, and every later Wake() was swallowed.
    private readonly Action _consumeWake;

    private void ConsumeWake() => Volatile.Write(ref _wakePending, 0);

    internal void Post(Action action)
    {
        _events.Writer.TryWrite(action);
    }

    // ---------------------------------------------------------------- the loop

    private async Task LoopAsync()
    {
        var reader = _events.Reader;
        try
        {
            while (await reader.WaitToReadAsync(_stopping.Token))
            {
                while (reader.TryRead(out var action)) action();
                if (_draining)
                {
                    // Shutting down: nothing new starts; work in flight finishes and is recorded (DrainAsync).
                    if (_outstanding == 0) _drained.TrySetResult();
                    continue;
                }
                var now = _clock.GetUtcNow().UtcTicks;
                Ingest(now);
                FireTimers(now);
                Dispatch(now);
                ArmTimer(now);
                if (_idleWaiters.Count > 0 && _outstanding == 0 && Volatile.Read(ref _wakePending) == 0 && reader.Count == 0)
                {
                    foreach (var w in _idleWaiters) w.TrySetResult();
                    _idleWaiters.Clear();
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested) { }
        catch (Exception e)
        {
            // A bug, not a mail problem: make it visible to whoever waits on the loop, and to the host.
            _log.LoopFailed(e);
            _ready.TrySetException(e);
            foreach (var w in _idleWaiters) w.TrySetException(e);
            throw;
        }
    }

    private void Ingest(long now)
    {
        if (!_ready.Task.IsCompleted && !_presized)
        {
            // Recovery: size each ready heap for its queue's pending recipients once, instead of doubling up to
            // a million entries and leaving every smaller array behind as large-object garbage.
            _presized = true;
            foreach (var (name, queue) in _queues) queue.Reserve(_spool.CountPending(name));
        }
        var batch = _spool.TakeCommitted(IngestBatch);
        foreach (var m in batch) Add(m, now);
        if (batch.Count == IngestBatch) { Wake(); return; }   // more to come: let events in between
        if (!_ready.Task.IsCompleted)
        {
            _ready.TrySetResult();
            _log.Ready(_jobCount, Stopwatch.GetElapsedTime(_startedAt).TotalMilliseconds);
        }
    }

    private void Add(SpooledMessage m, long now)
    {
        if (m.IsRemoved || m.Scheduled) return;
        var job = m;
        job.Scheduled = true;
        _jobCount++;
        List<int>? unreported = null;
        var allFinal = true;
        for (var i = 0; i < m.RecipientCount; i++)
        {
            var s = m.GetRecipient(i);
            if (s.Status == RecipientStatus.Pending)
            {
                allFinal = false;
                var due = s.NextAttemptAt?.UtcTicks ?? m.ArrivedAt.UtcTicks;
                if (due <= now) EnqueueReady(job, i, due);
                else _timers.Enqueue(new TimerItem(job, i, job.VersionOf(i), TimerKind.Due), due);
            }
            else if (!s.FinalReported) (unreported ??= []).Add(i);
        }
        if (unreported is not null) StartReport(job, unreported);   // crashed between "final" and "reported"
        else if (allFinal) MaybeComplete(job);
        ArmCheck(job, now);
        TrackArrival(job);
    }

    private void EnqueueReady(Job job, int index, long dueTicks)
    {
        var s = job.GetRecipient(index);
        QueueOf(Schedule(s.Schedule, s.Queue).QueueName)
            .Enqueue(job, index, job.VersionOf(index), dueTicks, job.Priority, job.Sequence);
    }

    private void FireTimers(long now)
    {
        if (now >= _nextHousekeeping)
        {
            _nextHousekeeping = now + Housekeeping.Ticks;
            CompactArrivals();
            StartWork(async ct => { await _spool.PurgeDeadLettersAsync(_clock.GetUtcNow(), ct); return static () => { }; });
        }
        while (_timers.TryPeek(out var t, out var at) && at <= now)
        {
            _timers.Dequeue();
            var job = t.Job;
            if (job.Gone) continue;
            switch (t.Kind)
            {
                case TimerKind.Due when job.VersionOf(t.Index) == t.Version && !job.BusyOf(t.Index)
                                        && job.GetRecipient(t.Index).Status == RecipientStatus.Pending:
                    EnqueueReady(job, t.Index, at);
                    break;
                case TimerKind.Check when job.CheckVersion == t.Version:
                    job.CheckTicks = 0;
                    RunCheck(job, now);
                    break;
                case TimerKind.ReportRetry:
                    job.ReportRetryArmed = false;
                    var unreported = Enumerable.Range(0, job.RecipientCount)
                        .Where(i => !job.BusyOf(i) && job.GetRecipient(i) is { IsFinal: true, FinalReported: false }).ToList();
                    if (unreported.Count > 0) StartReport(job, unreported);
                    break;
            }
        }
    }

    // A fired timer is no longer armed: forget its due time so the next pass arms it again even for the same
    // time (a system timer can fire a little before the wall clock reaches the time it was armed for).
    private void TimerFired()
    {
        Interlocked.Exchange(ref _armedFor, long.MaxValue);
        Wake();
    }

    private void ArmTimer(long now)
    {
        if (!_timers.TryPeek(out _, out var next)) next = _nextHousekeeping;
        next = Math.Min(next, _nextHousekeeping);
        if (next <= now) { Wake(); return; }
        if (next == _armedFor) return;
        _armedFor = next;
        // Relative to the clock as it is now, not as it was at the top of this pass.
        _timer.Change(TimeSpan.FromTicks(Math.Max(0, next - _clock.GetUtcNow().UtcTicks)), Timeout.InfiniteTimeSpan);
    }

    // ---------------------------------------------------------------- delivery

    private void Dispatch(long now)
    {
        foreach (var queue in _queues.Values)
        {
            while (queue.HasSlot && queue.TryDequeue(out var item))
            {
                var job = item.Job;
                var i = item.Index;
                if (job.Gone || job.BusyOf(i) || job.VersionOf(i) != item.Version) continue;   // stale entry
                var s = job.GetRecipient(i);
                if (s.Status != RecipientStatus.Pending) continue;
                var schedule = Schedule(s.Schedule, s.Queue);
                if (RecipientPolicy.ExpiresAt(schedule, job.ArrivedAt) is { } deadline && deadline.UtcTicks <= now)
                {
                    RunCheck(job, now);   // expires it (and any sibling) instead of another attempt
                    continue;
                }
                // Recipients of this message for the same domain and schedule that are due go in the same transaction.
                var group = new List<int> { i };
                for (var j = 0; j < job.RecipientCount; j++)
                {
                    if (j == i || job.BusyOf(j)) continue;
                    var o = job.GetRecipient(j);
                    if (o.Status == RecipientStatus.Pending && o.Schedule == s.Schedule && o.Domain == s.Domain
                        && (o.NextAttemptAt?.UtcTicks ?? 0) <= now)
                        group.Add(j);
                }
                foreach (var j in group) MarkBusy(job, j);
                queue.SlotTaken();
                StartDelivery(queue, job, schedule, s.Domain, group);
            }
        }
    }

    private void StartDelivery(VirtualQueue queue, Job job, ScheduleSettings schedule, string domain, List<int> group)
    {
        var id = job.Id;
        var states = group.Select(i => job.GetRecipient(i)).ToArray();
        StartWork(async ct =>
        {
            bool failed = false, completed = false;
            MessageEnvelope? envelope = null;
            List<RecipientChange>? settled = null;
            try
            {
                envelope = await _spool.ReadEnvelopeAsync(id, ct);
                var recipients = group.Select((i, k) => new DeliveryRecipient(i, envelope.Recipients[i], states[k].Attempts + 1)).ToList();
                var request = new DeliveryRequest(id, envelope, domain, schedule.Name, queue.Name, recipients, OpenContent(id));
                IReadOnlyList<RecipientOutcome> outcomes;
                try
                {
                    outcomes = await _agent.DeliverAsync(request, ct);
                }
                catch (Exception e) when (!ct.IsCancellationRequested)
                {
                    _log.AgentCrashed(id, e);
                    outcomes = recipients.Select(r => RecipientOutcome.Temporary(r.Address, 451, "4.4.0", "delivery failed: " + e.Message)).ToList();
                }
                var now = _clock.GetUtcNow();
                var unmatched = outcomes.ToList();
                var changes = new List<RecipientChange>(group.Count);
                var attempted = new Dictionary<int, ReportedAttempt>(group.Count);
                for (var k = 0; k < group.Count; k++)
                {
                    var address = recipients[k].Address;
                    var at = unmatched.FindIndex(o => string.Equals(o.Address, address, StringComparison.OrdinalIgnoreCase));
                    RecipientOutcome outcome;
                    if (at >= 0) { outcome = unmatched[at]; unmatched.RemoveAt(at); }
                    else outcome = RecipientOutcome.Temporary(address, 451, "4.4.0", "no outcome reported for this recipient");
                    var change = RecipientPolicy.AfterAttempt(group[k], states[k], outcome, schedule, job.ArrivedAt, now);
                    changes.Add(change);
                    attempted[group[k]] = new ReportedAttempt(outcome.Kind == OutcomeKind.Delivered && outcome.RemoteLacksDsn, now);
                    _log.Outcome(id, address, change.Status.ToString().ToLowerInvariant(), change.Attempts, change.NextAttemptAt,
                                 $"{outcome.Code} {outcome.EnhancedStatus} {outcome.Text}");
                }
                settled = changes;
                completed = await SettleAsync(job, envelope, changes, ct, attempted);
            }
            catch (SpoolCorruptException)
            {
                return () =>
                {
                    if (!job.Cancelled) { Quarantined(job, queue); return; }
                    queue.SlotFreed();   // the cancel removed it meanwhile
                    InFlightCancelled(job, group, settled, envelope);
                };
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _log.SettleFailed(id, e.Message);
                failed = true;
            }
            return () =>
            {
                queue.SlotFreed();
                if (job.Cancelled) InFlightCancelled(job, group, settled, envelope);   // already gone and counted out
                else if (completed) Completed(job, group);
                else Release(job, group, failed);
            };
        }, onCancel: () => queue.SlotFreed());
    }

    private Func<CancellationToken, ValueTask<Stream>> OpenContent(string id) => ct => _spool.OpenContentAsync(id, ct);

    /// <summary>
    /// Hands final recipients to the DSN stage, then makes the new states durable — marked reported, and the
    /// message completed when nothing is left — in ONE journal commit (Postfix's order too: the bounce/defer
    /// log is written before the queue file is updated). A crash in between repeats the attempt and the report
    /// at the next start (a delivery or DSN may repeat; none is lost). When the DSN stage throws, the states are
    /// written unreported and a ReportRetry timer reports them later.
    /// </summary>
    /// <param name="attempted">The attempt that just ended, per recipient index (in memory only: a report
    /// repeated later, or after a restart, lacks it and the DSN stage says <c>delivered</c> and uses the report time).</param>
    /// <returns>True when the spool completed the message (removed, or kept as a dead letter).</returns>
    private async Task<bool> SettleAsync(Job job, MessageEnvelope envelope, List<RecipientChange> changes, CancellationToken ct,
                                         IReadOnlyDictionary<int, ReportedAttempt>? attempted = null)
    {
        var finals = changes.Where(c => c.Status != RecipientStatus.Pending).ToList();
        if (finals.Count > 0 && await TryReportFinalAsync(job, envelope, finals, ct, attempted))
        {
            for (var k = 0; k < changes.Count; k++)
                if (changes[k].Status != RecipientStatus.Pending) changes[k] = changes[k] with { FinalReported = true };
        }
        return await _spool.SettleAsync(job.Id, changes, ct);
    }

    /// <summary>Reports recipients whose final state is already durable, then records that they were reported.</summary>
    private async Task ReportFinalAsync(Job job, MessageEnvelope envelope, List<RecipientChange> finals, CancellationToken ct)
    {
        if (await TryReportFinalAsync(job, envelope, finals, ct))
            await _spool.UpdateRecipientsAsync(job.Id, finals.Select(c => c with { FinalReported = true }).ToList(), ct);
    }

    private async Task<bool> TryReportFinalAsync(Job job, MessageEnvelope envelope, List<RecipientChange> finals, CancellationToken ct,
                                                 IReadOnlyDictionary<int, ReportedAttempt>? attempted = null)
    {
        var id = job.Id;
        var report = new DeliveryReport(id, envelope, finals.Select(c =>
        {
            var r = new ReportedRecipient(c.Index, envelope.Recipients[c.Index], c.Status, c.LastError, c.Attempts, null, null);
            return attempted is not null && attempted.TryGetValue(c.Index, out var a) ? r with { Relayed = a.Relayed, LastAttemptAt = a.At } : r;
        }).ToList(), OpenContent(id));
        try
        {
            await _reports.RecipientsFinalAsync(report, ct);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _log.ReportFailed(id, e.Message);
            return false;   // stays unreported; retried by a ReportRetry timer
        }
        return true;
    }

    // ---------------------------------------------------------------- expiry, notify, reports

    /// <summary>Expires recipients past their TTL and sends due delay notifications for the others.</summary>
    private void RunCheck(Job job, long now)
    {
        var nowTime = new DateTimeOffset(now, TimeSpan.Zero);
        var expire = new List<int>();
        var notify = new List<(int Index, int Bits)>();
        for (var i = 0; i < job.RecipientCount; i++)
        {
            if (job.BusyOf(i)) continue;
            var s = job.GetRecipient(i);
            if (s.Status != RecipientStatus.Pending) continue;
            var schedule = Schedule(s.Schedule, s.Queue);
            if (RecipientPolicy.ExpiresAt(schedule, job.ArrivedAt) is { } deadline && deadline <= nowTime) expire.Add(i);
            else if (RecipientPolicy.DueNotifications(schedule, job.ArrivedAt, s.NotifySent, nowTime) is var bits and not 0)
                notify.Add((i, bits));
        }
        if (expire.Count > 0 || notify.Count > 0)
        {
            foreach (var i in expire) MarkBusy(job, i);
            foreach (var (i, _) in notify) MarkBusy(job, i);
            StartMaintenance(job, expire, notify);
        }
        ArmCheck(job, now);
    }

    private void StartMaintenance(Job job, List<int> expire, List<(int Index, int Bits)> notify)
    {
        var id = job.Id;
        var states = job.Snapshot().Recipients;
        var touched = expire.Concat(notify.Select(n => n.Index)).ToList();
        // Settings are looked up here, on the loop (the fallback table is loop-owned).
        var schedules = touched.ToDictionary(i => i, i => Schedule(states[i].Schedule, states[i].Queue));
        StartWork(async ct =>
        {
            bool failed = false, completed = false;
            try
            {
                var envelope = await _spool.ReadEnvelopeAsync(id, ct);
                if (notify.Count > 0)
                {
                    var delayed = notify.Select(n =>
                    {
                        var s = states[n.Index];
                        var schedule = schedules[n.Index];
                        return new ReportedRecipient(n.Index, envelope.Recipients[n.Index], s.Status, s.LastError, s.Attempts,
                                                     s.NextAttemptAt, RecipientPolicy.ExpiresAt(schedule, job.ArrivedAt))
                               { LastAttemptAt = RecipientPolicy.LastAttemptAt(s, schedule) };
                    }).ToList();
                    // Report first, then record: a crash in between repeats a delay DSN rather than losing it.
                    await _reports.DelayedAsync(new DeliveryReport(id, envelope, delayed, OpenContent(id)), ct);
                    await _spool.UpdateRecipientsAsync(id, notify.Select(n =>
                    {
                        var s = states[n.Index];
                        return new RecipientChange(n.Index, s.Status, s.Attempts, s.NextAttemptAt, s.LastError, s.NotifySent | n.Bits, s.FinalReported);
                    }).ToList(), ct);
                }
                if (expire.Count > 0)
                {
                    var changes = expire.Select(i =>
                    {
                        return RecipientPolicy.Expire(i, states[i], schedules[i]);
                    }).ToList();
                    foreach (var c in changes)
                        _log.Expired(id, envelope.Recipients[c.Index].Address, c.Attempts, schedules[c.Index].Name,
                                     c.LastError is { } e ? $"{e.Code} {e.EnhancedStatus} {e.Text}" : "");
                    var attempted = new Dictionary<int, ReportedAttempt>();
                    foreach (var i in expire)
                        if (RecipientPolicy.LastAttemptAt(states[i], schedules[i]) is { } last) attempted[i] = new ReportedAttempt(false, last);
                    completed = await SettleAsync(job, envelope, changes, ct, attempted);
                }
            }
            catch (SpoolCorruptException)
            {
                return () => Quarantined(job, null);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _log.SettleFailed(id, e.Message);
                failed = true;
            }
            return completed ? () => Completed(job, touched) : () => Release(job, touched, failed);
        });
    }

    private void StartReport(Job job, List<int> indices)
    {
        foreach (var i in indices) MarkBusy(job, i);
        var id = job.Id;
        StartWork(async ct =>
        {
            var failed = false;
            try
            {
                var envelope = await _spool.ReadEnvelopeAsync(id, ct);
                var finals = indices.Select(i =>
                {
                    var s = job.GetRecipient(i);
                    return new RecipientChange(i, s.Status, s.Attempts, s.NextAttemptAt, s.LastError, s.NotifySent, false);
                }).ToList();
                await ReportFinalAsync(job, envelope, finals, ct);
            }
            catch (SpoolCorruptException)
            {
                return () => Quarantined(job, null);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _log.SettleFailed(id, e.Message);
                failed = true;
            }
            return () => Release(job, indices, failed);
        });
    }

    /// <summary>Back on the loop after work on some recipients: requeue, arm timers, or complete the message.</summary>
    private void Release(Job job, List<int> indices, bool failed)
    {
        Unmark(job, indices);
        // Finished meanwhile by other work on it (completed by a parallel delivery, or cancelled): nothing to
        // schedule, but the marks had to go, or a retry of the dead letter would wait for work that is over.
        if (job.Gone) return;
        var now = _clock.GetUtcNow().UtcTicks;
        foreach (var i in indices)
        {
            var s = job.GetRecipient(i);
            if (s.Status == RecipientStatus.Pending)
            {
                var due = s.NextAttemptAt?.UtcTicks ?? now;
                if (failed) due = Math.Max(due, now + SettleRetry.Ticks);   // never spin on a broken spool
                if (due <= now) EnqueueReady(job, i, due);
                else _timers.Enqueue(new TimerItem(job, i, job.VersionOf(i), TimerKind.Due), due);
            }
            else if (!s.FinalReported && !job.ReportRetryArmed)
            {
                job.ReportRetryArmed = true;
                _timers.Enqueue(new TimerItem(job, i, 0, TimerKind.ReportRetry), now + SettleRetry.Ticks);
            }
        }
        ArmCheck(job, now);
        MaybeComplete(job);
    }

    private void MaybeComplete(Job job)
    {
        if (job.Completing || job.BusyCount > 0) return;
        for (var i = 0; i < job.RecipientCount; i++)
        {
            if (job.GetRecipient(i) is not { IsFinal: true, FinalReported: true }) return;
        }
        job.Completing = true;
        var id = job.Id;
        StartWork(async ct =>
        {
            try
            {
                await _spool.CompleteAsync(id, ct);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _log.SettleFailed(id, e.Message);
                return () => job.Completing = false;   // tried again when anything next happens to it
            }
            return () => Completed(job);
        });
    }

    /// <summary>On the loop: the spool completed the message; forget it (its busy marks too: a dead letter can be re-queued).</summary>
    private void Completed(Job job, List<int>? busy = null)
    {
        if (busy is not null) Unmark(job, busy);
        if (job.Gone) return;   // cancelled meanwhile: already counted out
        job.Gone = true;
        _jobCount--;
    }

    private void Quarantined(Job job, VirtualQueue? queue)
    {
        queue?.SlotFreed();
        if (job.Gone) return;   // cancelled meanwhile (its file gone, hence the "corrupt" read): already counted out
        _log.MessageQuarantined(job.Id);
        job.Gone = true;
        _jobCount--;
    }

    /// <summary>Arms the per-message timer for its next TTL expiry or notify time.</summary>
    private void ArmCheck(Job job, long now)
    {
        long next = long.MaxValue;
        for (var i = 0; i < job.RecipientCount; i++)
        {
            if (job.BusyOf(i)) continue;
            var s = job.GetRecipient(i);
            if (s.Status != RecipientStatus.Pending) continue;
            var schedule = Schedule(s.Schedule, s.Queue);
            if (RecipientPolicy.ExpiresAt(schedule, job.ArrivedAt) is { } deadline) next = Math.Min(next, deadline.UtcTicks);
            if (RecipientPolicy.NextNotification(schedule, job.ArrivedAt, s.NotifySent) is { } notify) next = Math.Min(next, notify.UtcTicks);
        }
        if (next == long.MaxValue || next == job.CheckTicks) return;
        job.CheckTicks = next;
        _timers.Enqueue(new TimerItem(job, -1, ++job.CheckVersion, TimerKind.Check), Math.Max(next, now));
    }

    private static void MarkBusy(Job job, int i)
    {
        job.BusyOf(i) = true;
        job.BusyCount++;
        job.VersionOf(i)++;
    }

    /// <summary>Work on these recipients is over (the version bump voids timers armed while it ran).</summary>
    private static void Unmark(Job job, List<int> indices)
    {
        foreach (var i in indices)
        {
            job.BusyOf(i) = false;
            job.BusyCount--;
            job.VersionOf(i)++;
        }
    }

    /// <summary>Runs work off the loop. It must return the loop-side continuation; exactly one is posted.</summary>
    private void StartWork(Func<CancellationToken, Task<Action>> work, Action? onCancel = null)
    {
        _outstanding++;
        var ct = _stopping.Token;
        _ = Task.Run(async () =>
        {
            Action apply;
            try { apply = await work(ct); }
            catch (Exception) { apply = onCancel ?? (() => { }); }   // only cancellation at shutdown gets here
            Post(() =>
            {
                _outstanding--;
                apply();
            });
            Wake();
        });
    }

    // ---------------------------------------------------------------- configuration lookups

    private ScheduleSettings Schedule(string name, string recordedQueue)
    {
        if (_schedules.TryGetValue(name, out var s)) return s;
        if (_fallbacks.TryGetValue(name, out s)) return s;
        _log.UnknownSchedule(name);
        if (_fallback is { } fallback)
        {
            // A schedule the config no longer has: its recipients go by the strategy's 'else' schedule (a reload
            // also moves them durably, RerouteAsync).
            _fallbacks[name] = fallback;
            return fallback;
        }
        // A schedule removed from the config: keep trying, with the defaults Stalwart documents.
        s = new ScheduleSettings(name, recordedQueue, [TimeSpan.FromMinutes(5)], [], new Expiry.Ttl(TimeSpan.FromDays(5)), null);
        _fallbacks[name] = s;
        return s;
    }

    private VirtualQueue QueueOf(string name)
    {
        if (_queues.TryGetValue(name, out var q)) return q;
        const int threads = 10;
        _log.UnknownQueue(name, threads);
        q = new VirtualQueue(new VirtualQueueSettings(name, threads, TimeSpan.FromMinutes(1), null));
        _queues[name] = q;
        _queueView = new Dictionary<string, VirtualQueue>(_queues, StringComparer.Ordinal);
        return q;
    }

    public async Task StopAsync()
    {
        if (_stopping.IsCancellationRequested) return;
        _stopping.Cancel();
        _spool.Committed -= Wake;
        _timer.Dispose();
        if (_loop is not null)
        {
            try { await _loop; } catch (OperationCanceledException) { }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stopping.Dispose();
    }

    private enum TimerKind : byte { Due, Check, ReportRetry }

    /// <summary>16 bytes (one per waiting recipient and one per message): the kind rides in the index's sign.</summary>
    private readonly struct TimerItem(Job job, int index, int version, TimerKind kind)
    {
        private readonly int _index = kind switch { TimerKind.Due => index, TimerKind.Check => -1, _ => -2 };
        public Job Job { get; } = job;
        public int Version { get; } = version;
        public int Index => _index;
        public TimerKind Kind => _index >= 0 ? TimerKind.Due : _index == -1 ? TimerKind.Check : TimerKind.ReportRetry;
    }

    /// <summary>What a final report says about the attempt behind it (kept in memory, not in the spool).</summary>
    private readonly record struct ReportedAttempt(bool Relayed, DateTimeOffset At);
}

