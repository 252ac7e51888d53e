using Relay.Scheduler;

namespace Relay;

/// <summary><c>[delivery] hold = true</c>: every attempt is deferred, nothing leaves, nothing is lost.</summary>
public sealed class HoldingAgent : IDeliveryAgent
{
    public Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<RecipientOutcome>>(request.Recipients
            .Select(r => RecipientOutcome.Temporary(r.Address, 451, "4.3.2", "delivery held by [delivery] hold"))
            .ToList());
}
