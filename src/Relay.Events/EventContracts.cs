// EventContracts: what the HTTP submission API (Relay.Api) and the host need from the delivery-event stage.
// Events are recorded for messages an API client submitted (envelope Source == "api", AuthenticatedAs = the
// client's name): they feed that client's status view and its webhook.
using Relay.Spool;

namespace Relay.Events;

/// <summary>The kinds of delivery event (issue #10), as they appear in JSON and webhooks.</summary>
public static class DeliveryEventType
{
    public const string Accepted = "accepted";
    public const string Deferred = "deferred";
    public const string Delivered = "delivered";
    public const string Failed = "failed";
    public const string Expired = "expired";
    public const string DelayedDsnSent = "delayed-dsn-sent";
    public const string Bounced = "bounced";
    /// <summary>An operator queued a final (failed or expired) recipient again: its status is <c>queued</c> until the next final event.</summary>
    public const string Requeued = "requeued";
}

/// <summary>One event about one message (and, except for <c>accepted</c>, one recipient).</summary>
/// <param name="Sequence">Position in the durable event log (increasing; the webhook cursor).</param>
/// <param name="Attempt">1-based attempt number for deferred/delivered/failed, else 0.</param>
public sealed record DeliveryEvent(
    long Sequence,
    string Type,
    string MessageId,
    string Client,
    string? Recipient,
    DateTimeOffset At,
    int Attempt,
    int Code,
    string? EnhancedStatus,
    string? Text,
    string? RemoteHost);

/// <summary>Called by the submission API after a message is durable in the spool, before it answers 202.</summary>
public interface IAcceptedMessages
{
    /// <summary>Durably records the <c>accepted</c> event for <paramref name="envelope"/> (Source "api").</summary>
    ValueTask MessageAcceptedAsync(MessageEnvelope envelope, CancellationToken cancellationToken);
}

/// <summary>Per-recipient view for <c>GET /api/v1/messages/{id}</c>.</summary>
public sealed record RecipientStatusView(
    string Address,
    string State,              // "queued" | "deferred" | "delivered" | "failed" | "expired"
    string Schedule,
    string Queue,
    int Attempts,
    DateTimeOffset? LastAttemptAt,
    DateTimeOffset? NextAttemptAt,
    string? LastReply);        // e.g. "450 4.2.0 mailbox busy"

public sealed record MessageStatusView(
    string Id,
    string Client,
    string Sender,
    int Priority,
    DateTimeOffset AcceptedAt,
    DateTimeOffset? FinishedAt,
    IReadOnlyList<RecipientStatusView> Recipients,
    IReadOnlyList<DeliveryEvent> Events);

/// <summary>Status of API-submitted messages, kept for <c>[spool] retention</c> after they finish.</summary>
public interface IMessageStatusSource
{
    /// <summary>The message's status, or null when unknown or purged. The caller checks <see cref="MessageStatusView.Client"/>.</summary>
    ValueTask<MessageStatusView?> FindAsync(string messageId, CancellationToken cancellationToken);
}

/// <summary>Where one API client's events are pushed (<c>[api.client.NAME] webhook</c> / <c>webhook-secret</c>).</summary>
public sealed record WebhookTarget(string Client, Uri Url, string Secret);
