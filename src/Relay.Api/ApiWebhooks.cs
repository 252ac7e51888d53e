// ApiWebhooks: the webhook of every [api.client.NAME] that has one, for the delivery-event stage.
using Relay.Events;

namespace Relay.Api;

public static class ApiWebhooks
{
    public static IReadOnlyList<WebhookTarget> TargetsFrom(Relay.Config.Settings.ApiSettings settings) =>
        settings.Clients.Values
            .Where(c => c.Webhook is not null && !string.IsNullOrEmpty(c.WebhookSecret))
            .OrderBy(c => c.Name, StringComparer.Ordinal)
            .Select(c => new WebhookTarget(c.Name, c.Webhook!, c.WebhookSecret!))
            .ToList();
}
