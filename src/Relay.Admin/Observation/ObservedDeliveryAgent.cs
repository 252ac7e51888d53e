// ObservedDeliveryAgent: sits between the scheduler and the real delivery agent and counts every attempt by
// queue and outcome, and remembers it for the message view. It changes nothing: outcomes and exceptions pass through.
using Relay.Admin.Metrics;
using Relay.Scheduler;

namespace Relay.Admin.Observation;

public sealed class ObservedDeliveryAgent(IDeliveryAgent inner, RelayMetrics metrics, DeliveryHistory history, TimeProvider clock)
    : IDeliveryAgent
{
    public async Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
    {
        IReadOnlyList<RecipientOutcome> outcomes;
        try
        {
            outcomes = await inner.DeliverAsync(request, cancellationToken);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            // The scheduler turns this into a temporary 4.4.0 for every recipient; record it the same way.
            Record(request, request.Recipients.Select(r =>
                RecipientOutcome.Temporary(r.Address, 451, "4.4.0", "delivery failed: " + e.Message)).ToList());
            throw;
        }
        Record(request, outcomes);
        return outcomes;
    }

    private void Record(DeliveryRequest request, IReadOnlyList<RecipientOutcome> outcomes)
    {
        var now = clock.GetUtcNow();
        foreach (var r in request.Recipients)
        {
            var o = outcomes.FirstOrDefault(x => string.Equals(x.Address, r.Address, StringComparison.OrdinalIgnoreCase))
                    ?? RecipientOutcome.Temporary(r.Address, 451, "4.4.0", "no outcome reported for this recipient");
            var result = o.Kind switch
            {
                OutcomeKind.Delivered => "delivered",
                OutcomeKind.Permanent => "permanent",
                _ => "temporary",
            };
            metrics.AttemptFinished(request.Queue, result);
            history.AddAttempt(request.MessageId, new AttemptRecord(
                now, r.Address, request.Queue, r.Attempt, result, o.Code, o.EnhancedStatus, o.Text, o.RemoteHost));
        }
    }
}
