// ISpoolStore: everything the scheduler, delivery, DSN and admin stages need from the spool, and nothing more,
// so that a shared networked backend (one store for a cluster) can implement it later.
namespace Relay.Spool;

/// <summary>
/// The durable queue: message bytes, envelopes and per-recipient state. All writes are durable when the
/// returned task completes. Implementations are thread-safe.
/// </summary>
public interface ISpoolStore : IMessageSpool, IAsyncDisposable
{
    /// <summary>
    /// Raised (on the committing thread) after a commit is durable. It carries nothing: it is a coalescing
    /// "look again" signal; the listener calls <see cref="TakeCommitted"/> to see what is new.
    /// </summary>
    event Action? Committed;

    /// <summary>
    /// Hands over up to <paramref name="max"/> messages not yet handed over, oldest first: at start-up every
    /// message recovered from disk, afterwards each newly committed one. Exactly one consumer (the scheduler).
    /// </summary>
    IReadOnlyList<SpooledMessage> TakeCommitted(int max);

    /// <summary>The live entry of one message, or null when it is not (or no longer) in the spool.</summary>
    SpooledMessage? Find(string id);

    /// <summary>
    /// Pages through all messages in id order (ids start with their arrival time), starting after
    /// <paramref name="afterId"/> (null = from the start). For the admin API.
    /// </summary>
    IReadOnlyList<QueuedMessage> List(string? afterId, int limit);

    /// <summary>Recipients not yet final in virtual queue <paramref name="queue"/> (for max-size back-pressure).</summary>
    long CountPending(string queue);

    /// <summary>The envelope as committed.</summary>
    /// <exception cref="SpoolCorruptException">The stored entry is unreadable; it has been quarantined.</exception>
    ValueTask<MessageEnvelope> ReadEnvelopeAsync(string id, CancellationToken cancellationToken);

    /// <summary>
    /// The envelope as committed, for read-only views (status queries): never quarantines. Null when the message
    /// file is missing or cannot be read now (damaged, or a transient error such as too many open files); the
    /// stage that needs the message (the scheduler's <see cref="ReadEnvelopeAsync"/>) decides about quarantine.
    /// </summary>
    ValueTask<MessageEnvelope?> TryReadEnvelopeAsync(string id, CancellationToken cancellationToken);

    /// <summary>The message bytes exactly as received (read-only, caller disposes).</summary>
    /// <exception cref="SpoolCorruptException">The stored entry is unreadable; it has been quarantined.</exception>
    ValueTask<Stream> OpenContentAsync(string id, CancellationToken cancellationToken);

    /// <summary>Durably applies recipient changes. Unknown ids are ignored.</summary>
    ValueTask UpdateRecipientsAsync(string id, IReadOnlyList<RecipientChange> changes, CancellationToken cancellationToken);

    /// <summary>
    /// <see cref="UpdateRecipientsAsync"/>, and when every recipient is then final and reported, also
    /// <see cref="CompleteAsync"/> — in one durable commit. Returns true when the message was completed.
    /// </summary>
    ValueTask<bool> SettleAsync(string id, IReadOnlyList<RecipientChange> changes, CancellationToken cancellationToken);

    /// <summary>
    /// Every recipient is final and reported: removes the message, or keeps it as a dead letter for the
    /// retention period when any recipient failed or expired.
    /// </summary>
    ValueTask CompleteAsync(string id, CancellationToken cancellationToken);

    /// <summary>Moves an unreadable message out of the queue (kept under the quarantine folder) and logs why.</summary>
    ValueTask QuarantineAsync(string id, string reason, CancellationToken cancellationToken);

    /// <summary>
    /// Removes a message for good (journal <c>Remove</c>, then its file is deleted), whatever its state: the
    /// operator's cancel (<c>postsuper -d</c>). Unknown ids are ignored; returns false for them.
    /// </summary>
    ValueTask<bool> RemoveAsync(string id, CancellationToken cancellationToken);

    /// <summary>
    /// Puts a dead letter back in the queue under its own id (<c>postsuper -r</c>): clears its finalized time,
    /// makes <paramref name="recipients"/> pending again (attempts 0, no notices sent, not reported, due
    /// <paramref name="now"/>), restarts its time in the queue (<see cref="SpooledMessage.ArrivedAt"/> = now, so
    /// expire and notify count from the requeue; the envelope keeps the real arrival) and hands the message over
    /// again through <see cref="TakeCommitted"/>. The
    /// consumer must have forgotten its old entry first (the scheduler resets its own fields on the message).
    /// Returns false when the id is unknown or the message is not a dead letter.
    /// </summary>
    ValueTask<bool> ReopenAsync(string id, IReadOnlyList<int> recipients, DateTimeOffset now, CancellationToken cancellationToken);

    /// <summary>
    /// Moves pending recipients to another (schedule, virtual queue) after a config reload: <paramref name="map"/>
    /// gets each pending recipient's recorded (schedule, queue) and returns the one it should have (the same
    /// pair to leave it). Changes are durable (one journal record per message changed) when the task completes.
    /// Returns every live message that still has a pending recipient (in commit order), so the caller can re-time
    /// them, and how many recipients moved.
    /// </summary>
    ValueTask<RerouteResult> RerouteAsync(Func<string, string, (string Schedule, string Queue)> map, CancellationToken cancellationToken);

    /// <summary>Deletes dead letters whose retention ended before <paramref name="now"/>; returns how many.</summary>
    ValueTask<int> PurgeDeadLettersAsync(DateTimeOffset now, CancellationToken cancellationToken);
}

/// <summary>What <see cref="ISpoolStore.RerouteAsync"/> did.</summary>
/// <param name="Live">Every live message with a pending recipient, in commit order.</param>
/// <param name="Moved">Recipients whose (schedule, queue) changed.</param>
public sealed record RerouteResult(IReadOnlyList<SpooledMessage> Live, int Moved);
