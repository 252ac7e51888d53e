// NoDeliveryEvents: a stand-in for the delivery-event stage until it is wired in: records nothing and knows
// no message, so GET /api/v1/messages/{id} answers 404.
using Relay.Events;
using Relay.Spool;

namespace Relay.Api;

public sealed class NoDeliveryEvents : IAcceptedMessages, IMessageStatusSource
{
    public static readonly NoDeliveryEvents Instance = new();

    public ValueTask MessageAcceptedAsync(MessageEnvelope envelope, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask<MessageStatusView?> FindAsync(string messageId, CancellationToken cancellationToken) =>
        ValueTask.FromResult<MessageStatusView?>(null);
}

/// <summary>The webhook of every <c>[api.client.NAME]</c> that has one, for the delivery-event stage.</summary>
public static class ApiWebhooks
{
    public static IReadOnlyList<WebhookTarget> TargetsFrom(Relay.Config.Settings.ApiSettings settings) =>
        settings.Clients.Values
            .Where(c => c.Webhook is not null && !string.IsNullOrEmpty(c.WebhookSecret))
            .OrderBy(c => c.Name, StringComparer.Ordinal)
            .Select(c => new WebhookTarget(c.Name, c.Webhook!, c.WebhookSecret!))
            .ToList();
}
