// EventingDeliveryAgent: sits between the scheduler and the delivery agent (outside ObservedDeliveryAgent) and
// records a durable "deferred" event for each temporary outcome of an API-submitted message. Outcomes and
// exceptions pass through unchanged; other messages pass straight through.
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Scheduler;

namespace Relay.Events;

public sealed class EventingDeliveryAgent(IDeliveryAgent inner, DeliveryEventLog log, TimeProvider clock, ILogger? logger = null)
    : IDeliveryAgent
{
    private readonly ILogger _log = logger ?? NullLogger.Instance;

    public Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken) =>
        DeliveryEventLog.IsApi(request.Envelope) ? DeliverAndRecordAsync(request, cancellationToken) : inner.DeliverAsync(request, cancellationToken);

    private async Task<IReadOnlyList<RecipientOutcome>> DeliverAndRecordAsync(DeliveryRequest request, CancellationToken cancellationToken)
    {
        IReadOnlyList<RecipientOutcome> outcomes;
        try
        {
            outcomes = await inner.DeliverAsync(request, cancellationToken);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            // The scheduler turns this into a temporary 451 4.4.0 for every recipient; record it the same way.
            await RecordAsync(request, request.Recipients.Select(r =>
                RecipientOutcome.Temporary(r.Address, 451, "4.4.0", "delivery failed: " + e.Message)).ToList());
            throw;
        }
        await RecordAsync(request, outcomes);
        return outcomes;
    }

    private async Task RecordAsync(DeliveryRequest request, IReadOnlyList<RecipientOutcome> outcomes)
    {
        var now = clock.GetUtcNow();
        var events = new List<StoredEvent>(request.Recipients.Count);
        foreach (var r in request.Recipients)
        {
            var o = outcomes.FirstOrDefault(x => string.Equals(x.Address, r.Address, StringComparison.OrdinalIgnoreCase))
                    ?? RecipientOutcome.Temporary(r.Address, 451, "4.4.0", "no outcome reported for this recipient");
            if (o.Kind == OutcomeKind.Delivered)
            {
                // The final report carries the spool's state, which has no reply for a delivery: keep it for the event.
                log.RememberOutcome(request.MessageId, r.Index, o);
                continue;
            }
            if (o.Kind == OutcomeKind.Permanent) continue;   // "failed" comes with the final report (its LastError is this reply)
            events.Add(new StoredEvent
            {
                Type = DeliveryEventType.Deferred, Rcpt = r.Index, Address = r.Address, At = now, Attempt = r.Attempt,
                Code = o.Code, Status = o.EnhancedStatus, Text = o.Text, Host = o.RemoteHost,
            });
        }
        if (events.Count == 0) return;
        try
        {
            await log.AppendAsync(request.Envelope, events);
        }
        catch (Exception e)
        {
            // The attempt happened; failing it here would deliver twice. The status view misses this attempt.
            _log.RecordFailed(request.MessageId, e.Message);
        }
    }
}
