// SpoolQueueControl: retry and cancel built only on today's public ISpoolStore and QueueScheduler.
// Retry of a live message is QueueScheduler.RetryNow; a dead letter is re-injected as a new message (new id,
// arrival now, so its TTL starts over) because the spool cannot re-open a finalized message. Cancel removes
// the message with QuarantineAsync, the only durable removal the spool offers: the scheduler then drops it the
// next time it touches it, and a copy stays under quarantine/ with the reason. A delivery already in flight
// finishes (as with postsuper -d); its result is ignored since the message is gone.
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Admin;

public sealed class SpoolQueueControl(
    ISpoolStore spool, QueueScheduler scheduler, IDeliveryReports reports, TimeProvider clock, ILogger? logger = null) : IQueueControl
{
    /// <summary>Status and text given to recipients an operator cancels with a bounce (RFC 3463 5.0.0: other).</summary>
    public static readonly DeliveryError Cancelled = new(0, "5.0.0", "message cancelled by the relay operator", null);

    private readonly ILogger _log = logger ?? NullLogger.Instance;

    public async Task<ControlResult> RetryAsync(string messageId, CancellationToken cancellationToken)
    {
        if (spool.Find(messageId)?.Snapshot() is not { } m) return new ControlResult(ControlOutcome.NotFound, 0);
        var pending = m.Recipients.Count(r => r.Status == RecipientStatus.Pending);
        if (pending > 0)
        {
            scheduler.RetryNow(messageId);
            _log.RetryRequested(messageId, pending);
            return new ControlResult(ControlOutcome.Done, pending);
        }
        var again = Enumerable.Range(0, m.Recipients.Count)
            .Where(i => m.Recipients[i].Status is RecipientStatus.Failed or RecipientStatus.Expired).ToList();
        if (again.Count == 0) return new ControlResult(ControlOutcome.NothingToDo, 0, Detail: "every recipient was delivered");
        if (m.FinalizedAt is null)
            return new ControlResult(ControlOutcome.NothingToDo, 0, Detail: "the message is being finished; try again in a moment");

        var envelope = await spool.ReadEnvelopeAsync(messageId, cancellationToken);
        await using var incoming = spool.Begin();
        await using (var content = await spool.OpenContentAsync(messageId, cancellationToken))
        {
            var buffer = new byte[81920];
            int n;
            while ((n = await content.ReadAsync(buffer, cancellationToken)) > 0)
                await incoming.WriteAsync(buffer.AsMemory(0, n), cancellationToken);
        }
        await incoming.CommitAsync(envelope with
        {
            Id = incoming.Id,
            ArrivedAt = clock.GetUtcNow(),
            Recipients = again.Select(i => envelope.Recipients[i]).ToList(),
        }, cancellationToken);
        await spool.QuarantineAsync(messageId, $"requeued by the operator as {incoming.Id}", cancellationToken);
        _log.Requeued(messageId, incoming.Id, again.Count);
        return new ControlResult(ControlOutcome.Done, again.Count, incoming.Id);
    }

    public async Task<ControlResult> CancelAsync(string messageId, bool bounce, CancellationToken cancellationToken)
    {
        if (spool.Find(messageId)?.Snapshot() is not { } m) return new ControlResult(ControlOutcome.NotFound, 0);
        var pending = Enumerable.Range(0, m.Recipients.Count).Where(i => m.Recipients[i].Status == RecipientStatus.Pending).ToList();
        if (bounce && pending.Count > 0)
        {
            var changes = pending.Select(i => new RecipientChange(
                i, RecipientStatus.Failed, m.Recipients[i].Attempts, null, Cancelled, m.Recipients[i].NotifySent, false)).ToList();
            // Durable first, then the DSN (the order the scheduler uses): a crash in between leaves failed,
            // unreported recipients, which the scheduler reports at the next start.
            await spool.UpdateRecipientsAsync(messageId, changes, cancellationToken);
            var envelope = await spool.ReadEnvelopeAsync(messageId, cancellationToken);
            var report = new DeliveryReport(messageId, envelope, changes.Select(c => new ReportedRecipient(
                c.Index, envelope.Recipients[c.Index], c.Status, c.LastError, c.Attempts, null, null)).ToList(),
                ct => spool.OpenContentAsync(messageId, ct));
            await reports.RecipientsFinalAsync(report, cancellationToken);
        }
        await spool.QuarantineAsync(messageId, bounce ? "cancelled by the operator, bounced" : "deleted by the operator", cancellationToken);
        _log.Deleted(messageId, pending.Count, bounce);
        return new ControlResult(ControlOutcome.Done, pending.Count);
    }
}
