// QueueScheduler.Operations: what operators do to a running scheduler — reload the [queue] settings, retry or
// cancel one message (IQueueControl), read per-queue stats, drain at shutdown. Every change runs on the loop.
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Relay.Config.Settings;
using Relay.Spool;
using Job = Relay.Spool.SpooledMessage;

namespace Relay.Scheduler;

public sealed partial class QueueScheduler
{
    /// <summary>Status and text given to recipients an operator cancels with a bounce (RFC 3463 5.0.0: other).</summary>
    public static readonly DeliveryError Cancelled = new(0, "5.0.0", "message cancelled by the relay operator", null);

    private readonly ConcurrentDictionary<string, ArrivalTrack> _arrivals = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile IReadOnlyDictionary<string, VirtualQueue>? _queueView;
    private bool _draining;

    /// <summary>
    /// Optional: told before a dead letter is requeued and when a cancel leaves recipients without a failure report
    /// (the delivery-event log, for API status and webhooks). Set before <see cref="Start"/>.
    /// </summary>
    public IQueueOperationsObserver? Operations { get; set; }

    // ---------------------------------------------------------------- stats (any thread)

    /// <summary>
    /// Back-pressure for RCPT (DESIGN.md max-size): false when virtual queue <paramref name="queueName"/> already
    /// holds its max-size of recipients not yet final. Thread-safe; follows reloads.
    /// </summary>
    public bool HasRoom(string queueName) =>
        !_queueSettings.TryGetValue(queueName, out var q) || q.MaxSize is not { } max || _spool.CountPending(queueName) < max;

    /// <summary>
    /// Per configured virtual queue (the set follows reloads): depth (recipients not final), deliveries in flight,
    /// slots, and the arrival of its oldest pending message. Thread-safe, approximate.
    /// </summary>
    public IReadOnlyList<VirtualQueueStats> GetQueueStats()
    {
        var view = _queueView!;
        var now = _clock.GetUtcNow();
        return _queueSettings.Values.Select(q => new VirtualQueueStats(
            q.Name, _spool.CountPending(q.Name), view.TryGetValue(q.Name, out var v) ? v.InFlight : 0, q.ThreadsPerNode, q.MaxSize,
            _arrivals.TryGetValue(q.Name, out var track) ? track.Oldest(now) : null)).ToList();
    }

    /// <summary>Loop, once a minute: drops finished messages from lists that grew past twice their queue's pending count.</summary>
    private void CompactArrivals()
    {
        foreach (var (queue, track) in _arrivals) track.Compact(_spool.CountPending(queue));
    }

    /// <summary>For tests: how many messages the oldest-arrival list of <paramref name="queue"/> holds.</summary>
    internal int TrackedArrivals(string queue) => _arrivals.TryGetValue(queue, out var track) ? track.Count : 0;

    /// <summary>Loop: remembers, per virtual queue, messages with a pending recipient in it, in commit order.</summary>
    private void TrackArrival(Job job)
    {
        string? last = null;
        for (var i = 0; i < job.RecipientCount; i++)
        {
            var s = job.GetRecipient(i);
            if (s.Status != RecipientStatus.Pending || s.Queue == last) continue;
            last = s.Queue;
            _arrivals.GetOrAdd(s.Queue, static q => new ArrivalTrack(q)).Add(job, _spool);
        }
    }

    /// <summary>
    /// Messages in commit order (≈ arrival order) that had a pending recipient in one queue. The oldest pending is
    /// the first still pending there; those in front that are finished are dropped as they are met, so each
    /// message is looked at O(1) times. A re-opened dead letter goes to the back with its new arrival. So that a
    /// message stuck in front (or nobody asking) never keeps every later, finished one alive, the list is compacted
    /// whenever it grows past twice the queue's pending recipients: amortized O(1) per message, memory bounded by
    /// what is pending.
    /// </summary>
    private sealed class ArrivalTrack(string queue)
    {
        private readonly object _gate = new();
        private Queue<Job> _jobs = new();
        private long _checkAt = 1024;   // length at which Add next asks the spool for the queue's pending count

        public void Add(Job job, ISpoolStore spool)
        {
            lock (_gate)
            {
                _jobs.Enqueue(job);
                if (_jobs.Count > _checkAt) Compact(spool.CountPending(queue));
            }
        }

        public void Compact(long pendingInQueue)
        {
            lock (_gate)
            {
                if (_jobs.Count > 2 * pendingInQueue + 1024)
                    _jobs = new Queue<Job>(_jobs.Where(j => !j.IsRemoved && HasPendingIn(j)));
                _checkAt = Math.Max(2L * _jobs.Count, 2 * pendingInQueue + 1024);   // next look once it has doubled
            }
        }

        public int Count
        {
            get { lock (_gate) return _jobs.Count; }
        }

        public void Clear()
        {
            lock (_gate) _jobs = new Queue<Job>();
        }

        /// <summary>
        /// A held message (its queue time starts at the end of the hold, in the future) is skipped: it would hide
        /// older mail behind it and give a negative age. Held mail alone counts as arrived <paramref name="now"/>.
        /// </summary>
        public DateTimeOffset? Oldest(DateTimeOffset now)
        {
            lock (_gate)
            {
                while (_jobs.TryPeek(out var head) && (head.IsRemoved || !HasPendingIn(head))) _jobs.Dequeue();
                DateTimeOffset? held = null;
                foreach (var job in _jobs)   // past the held ones at the front only (few; compaction bounds the rest)
                {
                    if (job.IsRemoved || !HasPendingIn(job)) continue;
                    if (job.ArrivedAt <= now) return job.ArrivedAt;
                    held = now;
                }
                return held;
            }
        }

        private bool HasPendingIn(Job job)
        {
            for (var i = 0; i < job.RecipientCount; i++)
            {
                if (job.GetRecipient(i) is { Status: RecipientStatus.Pending } s && s.Queue == queue) return true;
            }
            return false;
        }
    }

    // ---------------------------------------------------------------- reload

    /// <summary>
    /// Applies new <c>[queue]</c> settings (config reload), on the loop: virtual queues change their
    /// threads-per-node, max-size and priority-aging; added ones start; removed ones take no new work and finish
    /// what they have in flight. Queued recipients keep their schedule when it still exists (its new retry,
    /// notify and expire apply); recipients of a removed schedule move to the strategy's fallback (<c>else</c>)
    /// schedule, durably (a spool journal record, so a restart keeps the move). Nothing is dropped.
    /// </summary>
    public Task<SchedulerReload> ReconfigureAsync(QueueSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        // Before Start the action waits in the channel and runs first; once stopping, nothing would run it.
        return OnLoop<SchedulerReload>(done => ApplySettings(settings, done), CancellationToken.None);
    }

    private void ApplySettings(QueueSettings settings, TaskCompletionSource<SchedulerReload> done)
    {
        var added = new List<string>();
        var removed = new List<string>();
        var retired = new List<VirtualQueue>();
        foreach (var (name, queue) in _queues.ToList())
        {
            if (settings.VirtualQueues.TryGetValue(name, out var changed)) queue.Settings = changed;
            else
            {
                _queues.Remove(name);   // its deliveries in flight keep their slot object and free it when done
                retired.Add(queue);
                removed.Add(name);
            }
        }
        foreach (var (name, queueSettings) in settings.VirtualQueues)
        {
            if (_queues.ContainsKey(name)) continue;
            _queues[name] = new VirtualQueue(queueSettings);
            added.Add(name);
        }
        _queueView = new Dictionary<string, VirtualQueue>(_queues, StringComparer.Ordinal);
        _schedules = settings.Schedules;
        _queueSettings = settings.VirtualQueues;
        _fallback = settings.Strategy.Fallback;
        _fallbacks.Clear();

        var fallback = settings.Strategy.Fallback;
        (string, string) Map(string schedule, string queue) =>
            settings.Schedules.TryGetValue(schedule, out var s) ? (s.Name, s.QueueName) : (fallback.Name, fallback.QueueName);
        StartWork(async ct =>
        {
            RerouteResult result;
            try { result = await _spool.RerouteAsync(Map, ct); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The new settings are in force here (and the spool may have moved recipients in memory before its
                // journal failed): say so rather than refuse a reload that has in fact been applied.
                return () =>
                {
                    Rebuild([], retired);
                    done.TrySetResult(new SchedulerReload(0, added, removed) { RerouteError = e.Message });
                };
            }
            return () =>
            {
                Rebuild(result.Live, retired);
                _log.Reconfigured(settings.Schedules.Count, settings.VirtualQueues.Count, result.Moved, fallback.Name);
                done.TrySetResult(new SchedulerReload(result.Moved, added, removed));
            };
        }, onCancel: () => done.TrySetCanceled());
    }

    /// <summary>Loop, after a reroute: re-sorts every ready heap (queue and aging may have changed) and re-times expiry/notify.</summary>
    private void Rebuild(IReadOnlyList<Job> live, List<VirtualQueue> retired)
    {
        var items = new List<ReadyItem>();
        foreach (var queue in _queues.Values.Concat(retired)) queue.DrainTo(items);
        foreach (var item in items)
        {
            var job = item.Job;
            var i = item.Index;
            if (job.Gone || job.BusyOf(i) || job.VersionOf(i) != item.Version) continue;
            var s = job.GetRecipient(i);
            if (s.Status != RecipientStatus.Pending) continue;
            EnqueueReady(job, i, s.NextAttemptAt?.UtcTicks ?? job.ArrivedAt.UtcTicks);
        }
        if (live.Count == 0) return;
        var now = _clock.GetUtcNow().UtcTicks;
        foreach (var track in _arrivals.Values) track.Clear();
        foreach (var job in live)
        {
            if (!job.Scheduled || job.Gone) continue;   // not taken yet: Add sees its new route
            job.CheckTicks = 0;                          // new expire/notify times: arm again
            ArmCheck(job, now);
            TrackArrival(job);
        }
    }

    // ---------------------------------------------------------------- retry / cancel (IQueueControl)

    private const string BeingFinished = "the message is being finished; try again in a moment";

    /// <summary>How long a retry waits for a message's last step to end (see <see cref="RetryAsync"/>).</summary>
    private static readonly TimeSpan FinishingWait = TimeSpan.FromSeconds(5);

    /// <remarks>
    /// A message whose recipients just became final is finished a moment later (the DSN stage, the spool's settle,
    /// then its delivery slot is freed here). A webhook consumer reacting to "bounced", or an operator quick on
    /// the draw, must not get "try again" for that moment, so the retry waits (real time, bounded) for it to end.
    /// </remarks>
    public async Task<ControlResult> RetryAsync(string messageId, CancellationToken cancellationToken)
    {
        var deadline = Environment.TickCount64 + (long)FinishingWait.TotalMilliseconds;
        while (true)
        {
            if (await RetryOnceAsync(messageId, cancellationToken) is { } result) return result;
            if (Environment.TickCount64 >= deadline) return new ControlResult(ControlOutcome.NothingToDo, 0, Detail: BeingFinished);
            await Task.Delay(10, cancellationToken);
        }
    }

    /// <summary>One try on the loop; null while the message is being finished (see <see cref="RetryAsync"/>).</summary>
    private Task<ControlResult?> RetryOnceAsync(string messageId, CancellationToken cancellationToken) =>
        OnLoop<ControlResult?>(done =>
        {
            if (_spool.Find(messageId) is not { } job) { done.TrySetResult(new ControlResult(ControlOutcome.NotFound, 0)); return; }
            if (job.Requeuing)
            {
                done.TrySetResult(new ControlResult(ControlOutcome.NothingToDo, 0, Detail: "the message is being requeued"));
                return;
            }
            var now = _clock.GetUtcNow();
            var pending = 0;
            var again = new List<int>();
            for (var i = 0; i < job.RecipientCount; i++)
            {
                var s = job.GetRecipient(i);
                if (s.Status == RecipientStatus.Pending) pending++;
                else if (s.Status is RecipientStatus.Failed or RecipientStatus.Expired) again.Add(i);
            }
            if (pending > 0)
            {
                if (job is { Scheduled: true, Gone: false })
                {
                    for (var i = 0; i < job.RecipientCount; i++)
                    {
                        if (job.BusyOf(i) || job.GetRecipient(i).Status != RecipientStatus.Pending) continue;
                        job.VersionOf(i)++;
                        EnqueueReady(job, i, now.UtcTicks);
                    }
                }
                _log.RetryRequested(messageId, pending);
                done.TrySetResult(new ControlResult(ControlOutcome.Done, pending));
                return;
            }
            if (again.Count == 0) { done.TrySetResult(new ControlResult(ControlOutcome.NothingToDo, 0, Detail: "every recipient was delivered")); return; }
            // Finished in the spool is not yet finished here: a slot still to free (BusyCount) or a completion
            // still to hear back (Completing, not yet Gone) would undo the requeue when its callback comes.
            if (job.FinalizedAt is null || job.BusyCount > 0 || job is { Completing: true, Gone: false })
            {
                done.TrySetResult(null);
                return;
            }
            // A dead letter: forget the scheduler's old entry, then the spool re-opens it and hands it over again
            // (TakeCommitted → Add), under the same id.
            var (wasScheduled, wasGone) = (job.Scheduled, job.Gone);
            var earlier = again.Select(i => (Index: i, State: job.GetRecipient(i))).ToList();
            job.Requeuing = true;
            job.Scheduled = false;
            job.Gone = false;
            job.Completing = false;
            job.ReportRetryArmed = false;
            job.CheckTicks = 0;
            job.CheckVersion++;
            void Undo()
            {
                job.Requeuing = false;
                if (job.FinalizedAt is null) return;   // re-opened after all (or being handed over)
                (job.Scheduled, job.Gone) = (wasScheduled, wasGone);
            }
            StartWork(async ct =>
            {
                MessageEnvelope? told = null;   // the observer was told about a requeue
                try
                {
                    if (Operations is { } observer)
                    {
                        var envelope = await _spool.ReadEnvelopeAsync(messageId, ct);
                        await observer.RequeuingAsync(messageId, envelope, again, ct);
                        told = envelope;
                    }
                    var reopened = await _spool.ReopenAsync(messageId, again, now, ct);
                    if (reopened) _log.Requeued(messageId, again.Count);
                    else if (told is not null) await ReassertAsync(messageId, told, earlier, ct);
                    var result = reopened
                        ? new ControlResult(ControlOutcome.Done, again.Count, messageId)
                        : new ControlResult(ControlOutcome.NotFound, 0);
                    return () => { Undo(); done.TrySetResult(result); };
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    if (told is not null) await ReassertAsync(messageId, told, earlier, ct);
                    return () => { Undo(); done.TrySetException(e); };
                }
            }, onCancel: () => { Undo(); done.TrySetCanceled(); });
        }, cancellationToken);

    /// <summary>A requeue the observer was told about did not happen: it hears the recipients' earlier final states again.</summary>
    private async Task ReassertAsync(string messageId, MessageEnvelope envelope, List<(int Index, RecipientState State)> earlier,
                                     CancellationToken ct)
    {
        var report = new DeliveryReport(messageId, envelope, earlier.Select(e => new ReportedRecipient(
            e.Index, envelope.Recipients[e.Index], e.State.Status, e.State.LastError, e.State.Attempts, null, null)).ToList(), OpenContent(messageId));
        try { await Operations!.FinalOutcomesAsync(report, ct); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _log.ObserverFailed(messageId, "requeue", e.Message);
        }
    }

    public Task<ControlResult> CancelAsync(string messageId, bool bounce, CancellationToken cancellationToken) =>
        OnLoop<ControlResult>(done =>
        {
            if (_spool.Find(messageId) is not { } job) { done.TrySetResult(new ControlResult(ControlOutcome.NotFound, 0)); return; }
            if (job.Cancelled)
            {
                // A second cancel would see the in-flight recipients as no longer busy (the job is gone) and bounce them.
                done.TrySetResult(new ControlResult(ControlOutcome.NothingToDo, 0, Detail: "the message is already being cancelled"));
                return;
            }
            var snapshot = job.Snapshot();
            var pending = Enumerable.Range(0, snapshot.Recipients.Count)
                .Where(i => snapshot.Recipients[i].Status == RecipientStatus.Pending).ToList();
            // A recipient being delivered right now is neither bounced nor marked cancelled: its attempt may already
            // have reported an outcome (report first, then settle), and a failure after a success would be a lie.
            // When the attempt ends, its real outcome goes to the observer (LiveReports, InFlightCancelled).
            var waiting = job.Scheduled && !job.Gone ? pending.Where(i => !job.BusyOf(i)).ToList() : pending;
            var bounced = bounce ? waiting : [];
            // Out of the scheduler now: heap and timer entries are skipped, a delivery in flight finishes but its
            // outcome is neither reported to the DSN stage (LiveReports) nor applied (Release ignores a gone job; the
            // spool ignores updates of a removed id).
            if (job is { Scheduled: true, Gone: false }) _jobCount--;
            job.Scheduled = true;   // not taken again by Ingest if it was still waiting to be handed over
            job.Gone = true;
            job.Cancelled = true;
            StartWork(async ct =>
            {
                try
                {
                    // Recipients no failure report will cover: every waiting one without a bounce.
                    var unreported = bounce ? [] : waiting;
                    if (Operations is { } observer && unreported.Count > 0)
                    {
                        var envelope = await _spool.ReadEnvelopeAsync(messageId, ct);
                        try { await observer.CancelledAsync(messageId, envelope, unreported, ct); }
                        catch (Exception e) when (e is not OperationCanceledException)
                        {
                            _log.ObserverFailed(messageId, "cancel", e.Message);   // the cancel itself goes on
                        }
                    }
                    if (bounce && bounced.Count > 0)
                    {
                        var changes = bounced.Select(i => new RecipientChange(
                            i, RecipientStatus.Failed, snapshot.Recipients[i].Attempts, null, Cancelled, snapshot.Recipients[i].NotifySent, false)).ToList();
                        // The envelope is read while the message is surely there (a delivery in flight may still finish it).
                        var envelope = await _spool.ReadEnvelopeAsync(messageId, ct);
                        // Durable first, then the DSN (as after an attempt): a crash in between leaves failed,
                        // unreported recipients, which are reported at the next start.
                        await _spool.UpdateRecipientsAsync(messageId, changes, ct);
                        var report = new DeliveryReport(messageId, envelope, changes.Select(c => new ReportedRecipient(
                            c.Index, envelope.Recipients[c.Index], c.Status, c.LastError, c.Attempts, null, null)).ToList(),
                            OpenContent(messageId));
                        await _reportsDirect.RecipientsFinalAsync(report, ct);
                    }
                    await _spool.RemoveAsync(messageId, ct);
                    _log.Cancelled(messageId, pending.Count, bounce);
                    return () => done.TrySetResult(new ControlResult(ControlOutcome.Done, pending.Count));
                }
                catch (SpoolCorruptException) when (_spool.Find(messageId) is null)
                {
                    // A delivery in flight finished the message meanwhile (or it was removed): nothing left to cancel.
                    return () => done.TrySetResult(new ControlResult(ControlOutcome.NothingToDo, 0, Detail: "the message was already finished"));
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    return () => done.TrySetException(e);
                }
            }, onCancel: () => done.TrySetCanceled());
        }, cancellationToken);

    /// <summary>Runs <paramref name="start"/> on the loop; it completes the task (maybe later, from work it starts).</summary>
    private Task<T> OnLoop<T>(Action<TaskCompletionSource<T>> start, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (_stopping.IsCancellationRequested || _draining) done.TrySetException(new InvalidOperationException("the scheduler is stopping"));
        else
        {
            Post(() =>
            {
                try { start(done); }
                catch (Exception e) { done.TrySetException(e); }
            });
        }
        return done.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Reports about a message the operator cancelled are dropped (its outcome no longer matters).</summary>
    private sealed class LiveReports(IDeliveryReports inner, QueueScheduler owner) : IDeliveryReports
    {
        public ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken) =>
            !owner.IsCancelled(report.MessageId) ? inner.RecipientsFinalAsync(report, cancellationToken)
            : owner.Operations is { } observer ? owner.TellFinalOutcomesAsync(observer, report, cancellationToken)
            : ValueTask.CompletedTask;

        public ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken) =>
            owner.IsCancelled(report.MessageId) ? ValueTask.CompletedTask : inner.DelayedAsync(report, cancellationToken);
    }

    private bool IsCancelled(string id) => _spool.Find(id) is not { Cancelled: false };

    private async ValueTask TellFinalOutcomesAsync(IQueueOperationsObserver observer, DeliveryReport report, CancellationToken ct)
    {
        try { await observer.FinalOutcomesAsync(report, ct); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _log.ObserverFailed(report.MessageId, "cancel", e.Message);   // the DSN stage is not told either way
        }
    }

    /// <summary>
    /// Loop: an attempt in flight during a cancel has ended. Its final outcomes went to the observer (LiveReports);
    /// the recipients it left pending (or all of them, when it could not be settled) are cancelled now.
    /// </summary>
    private void InFlightCancelled(Job job, List<int> group, IReadOnlyList<RecipientChange>? changes, MessageEnvelope? envelope)
    {
        if (Operations is not { } observer || envelope is null) return;
        var left = group.Where(i => changes?.FirstOrDefault(c => c.Index == i) is not { } c || c.Status == RecipientStatus.Pending).ToList();
        if (left.Count == 0) return;
        var id = job.Id;
        StartWork(async ct =>
        {
            try { await observer.CancelledAsync(id, envelope, left, ct); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _log.ObserverFailed(id, "cancel", e.Message);
            }
            return () => { };
        });
    }

    // ---------------------------------------------------------------- shutdown

    /// <summary>
    /// Graceful shutdown, first half: nothing new starts (no delivery, expiry, notice or ingest); work already
    /// running finishes and its outcome is recorded. Completes when nothing is in flight, or returns false when
    /// <paramref name="cancellationToken"/> fires first. Then call <see cref="StopAsync"/>, which cancels the rest.
    /// Everything not started stays in the spool as it was.
    /// </summary>
    public async Task<bool> DrainAsync(CancellationToken cancellationToken)
    {
        if (_loop is null || _loop.IsCompleted) return true;
        Post(() => _draining = true);
        try
        {
            await _drained.Task.WaitAsync(cancellationToken);
            return true;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }
}

/// <summary>What a scheduler reload did.</summary>
/// <param name="RecipientsMoved">Queued recipients moved to another schedule or queue (their schedule was removed, or now feeds another queue).</param>
public sealed record SchedulerReload(int RecipientsMoved, IReadOnlyList<string> QueuesAdded, IReadOnlyList<string> QueuesRemoved)
{
    /// <summary>
    /// Set when the new settings are in force but moving queued recipients of removed schedules did not become
    /// durable (a spool error): in this process they follow the new settings all the same.
    /// </summary>
    public string? RerouteError { get; init; }
}

/// <summary>One virtual queue as the admin API shows it.</summary>
/// <param name="OldestPendingArrival">Arrival of the oldest message with a recipient still pending here; null when none.</param>
public sealed record VirtualQueueStats(string Name, long Depth, int InFlight, int ThreadsPerNode, long? MaxSize,
                                       DateTimeOffset? OldestPendingArrival = null);
