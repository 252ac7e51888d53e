// DeliveryContracts: the scheduler's two boundaries downstream. The delivery agent REPORTS what happened to
// each recipient; the scheduler alone DECIDES retry, expiry and failure, and tells the DSN stage.
using Relay.Spool;

namespace Relay.Scheduler;

/// <summary>Implemented by the delivery stage: one SMTP transaction for recipients of one message and domain.</summary>
public interface IDeliveryAgent
{
    /// <summary>
    /// Tries the request once and returns one outcome per recipient (matched by address). A recipient left
    /// without an outcome counts as a temporary failure. Throwing counts as a temporary failure of all of them.
    /// </summary>
    Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken);
}

/// <summary>Recipients of one message, for one domain and one schedule, that go out together.</summary>
/// <param name="OpenContent">Opens the message bytes exactly as received (the caller disposes the stream).</param>
public sealed record DeliveryRequest(
    string MessageId,
    MessageEnvelope Envelope,
    string Domain,
    string Schedule,
    string Queue,
    IReadOnlyList<DeliveryRecipient> Recipients,
    Func<CancellationToken, ValueTask<Stream>> OpenContent);

/// <param name="Index">Position in <see cref="MessageEnvelope.Recipients"/>.</param>
/// <param name="Attempt">1 for the first attempt.</param>
public sealed record DeliveryRecipient(int Index, RecipientEntry Entry, int Attempt)
{
    public string Address => Entry.Address;
}

public enum OutcomeKind { Delivered, Temporary, Permanent }

/// <summary>What one attempt did for one recipient (RFC 3463 status, DESIGN.md: 5xx permanent, 4xx/timeouts temporary).</summary>
public sealed record RecipientOutcome(
    string Address,
    OutcomeKind Kind,
    int Code,
    string EnhancedStatus,
    string Text,
    string? RemoteHost = null)
{
    /// <summary>
    /// Delivered to a server that did not advertise the DSN extension (RFC 3461), so NOTIFY/ORCPT/ENVID could not
    /// be passed on: the DSN stage reports such a recipient as <c>Action: relayed</c> (RFC 3464 §2.3.3).
    /// Only meaningful for <see cref="OutcomeKind.Delivered"/>.
    /// </summary>
    public bool RemoteLacksDsn { get; init; }

    public static RecipientOutcome Delivered(string address, string? remoteHost = null, string text = "250 2.0.0 Ok") =>
        new(address, OutcomeKind.Delivered, 250, "2.0.0", text, remoteHost);

    public static RecipientOutcome Temporary(string address, int code, string enhanced, string text, string? remoteHost = null) =>
        new(address, OutcomeKind.Temporary, code, enhanced, text, remoteHost);

    public static RecipientOutcome Permanent(string address, int code, string enhanced, string text, string? remoteHost = null) =>
        new(address, OutcomeKind.Permanent, code, enhanced, text, remoteHost);
}

/// <summary>
/// Implemented by the DSN stage. Each call carries everything a DSN needs, so nothing is re-read. The stage
/// applies RFC 3461 NOTIFY (and never reports about a message from <c>&lt;&gt;</c>); the scheduler reports every
/// final recipient (delivered ones too, for NOTIFY=SUCCESS) and each delay. A message's bytes stay in the spool
/// until <see cref="RecipientsFinalAsync"/> has returned for all its recipients.
/// </summary>
public interface IDeliveryReports
{
    /// <summary>Recipients that reached a final state (delivered, failed, expired). Throwing makes the scheduler retry later.</summary>
    ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken);

    /// <summary>Recipients still pending whose schedule's <c>notify</c> time passed: one delay DSN. Called once per notify time.</summary>
    ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken);
}

public sealed record DeliveryReport(
    string MessageId,
    MessageEnvelope Envelope,
    IReadOnlyList<ReportedRecipient> Recipients,
    Func<CancellationToken, ValueTask<Stream>> OpenContent);

/// <param name="WillRetryUntil">For delays under a TTL schedule: when the relay gives up (RFC 3464 Will-Retry-Until).</param>
public sealed record ReportedRecipient(
    int Index,
    RecipientEntry Entry,
    RecipientStatus Status,
    DeliveryError? LastError,
    int Attempts,
    DateTimeOffset? NextAttemptAt,
    DateTimeOffset? WillRetryUntil)
{
    /// <summary>Delivered to a next hop without the DSN extension (<see cref="RecipientOutcome.RemoteLacksDsn"/>): <c>Action: relayed</c>.</summary>
    /// <remarks>Kept in memory only: a final report repeated after a restart says false.</remarks>
    public bool Relayed { get; init; }

    /// <summary>
    /// When the last attempt for this recipient ended (RFC 3464 Last-Attempt-Date), when the scheduler knows it;
    /// null otherwise (no attempt, or only a report repeated after a restart), and the DSN stage approximates.
    /// </summary>
    public DateTimeOffset? LastAttemptAt { get; init; }
}

/// <summary>A DSN sink that drops everything (for hosts or tests without a DSN stage).</summary>
public sealed class NoDeliveryReports : IDeliveryReports
{
    public ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    public ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken) => ValueTask.CompletedTask;
}

/// <summary>
/// Told about what an operator does to a message that no delivery outcome reports (implemented by the delivery-event
/// log, so an API client's status and webhook follow). Optional: set <c>QueueScheduler.Operations</c>.
/// </summary>
public interface IQueueOperationsObserver
{
    /// <summary>
    /// A dead letter's <paramref name="recipients"/> are about to be queued again (admin retry). Called, and awaited,
    /// before the spool re-opens the message, so that it is recorded before any new attempt reports. Throwing
    /// refuses the requeue.
    /// </summary>
    ValueTask RequeuingAsync(string messageId, MessageEnvelope envelope, IReadOnlyList<int> recipients, CancellationToken cancellationToken);

    /// <summary>
    /// The operator cancelled the message and <paramref name="recipients"/> (pending, not in flight, with no failure
    /// report of their own: a cancel without bounce; or left pending by an attempt in flight during the cancel) are
    /// final now.
    /// </summary>
    ValueTask CancelledAsync(string messageId, MessageEnvelope envelope, IReadOnlyList<int> recipients, CancellationToken cancellationToken);

    /// <summary>
    /// Final outcomes no DSN stage is told about: an attempt that was in flight when the operator cancelled the
    /// message ended with them (recipients it left pending come through <see cref="CancelledAsync"/>); or a requeue
    /// announced by <see cref="RequeuingAsync"/> did not happen, and these are the recipients' earlier final states.
    /// </summary>
    ValueTask FinalOutcomesAsync(DeliveryReport report, CancellationToken cancellationToken) => ValueTask.CompletedTask;
}
