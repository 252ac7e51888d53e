// RecipientState: the durable per-recipient delivery state the spool keeps and the scheduler changes.
namespace Relay.Spool;

/// <summary>Where one recipient stands. Everything but <see cref="Pending"/> is final.</summary>
public enum RecipientStatus : byte { Pending = 0, Delivered = 1, Failed = 2, Expired = 3 }

/// <summary>The last error an attempt reported, shaped like a DSN's status and diagnostic.</summary>
/// <param name="Code">SMTP reply code (e.g. 450), 0 when there was no reply (connection, DNS).</param>
/// <param name="EnhancedStatus">RFC 3463 status, e.g. <c>4.4.1</c>.</param>
/// <param name="Text">Reply text or error description.</param>
/// <param name="RemoteHost">The host that answered, when known.</param>
public sealed record DeliveryError(int Code, string EnhancedStatus, string Text, string? RemoteHost);

/// <summary>
/// One recipient's state as stored. <see cref="Domain"/>, <see cref="Schedule"/> and <see cref="Queue"/> are
/// fixed at commit; the rest changes with each attempt.
/// </summary>
/// <param name="NotifySent">Bit i set = the delay notification for the schedule's <c>notify[i]</c> was sent.</param>
/// <param name="FinalReported">A final recipient whose outcome was handed to the DSN stage.</param>
public readonly record struct RecipientState(
    string Domain,
    string Schedule,
    string Queue,
    RecipientStatus Status,
    int Attempts,
    DateTimeOffset? NextAttemptAt,
    DeliveryError? LastError,
    int NotifySent,
    bool FinalReported)
{
    public bool IsFinal => Status != RecipientStatus.Pending;
}

/// <summary>A change to one recipient (by its index in the envelope), written durably by <see cref="ISpoolStore.UpdateRecipientsAsync"/>.</summary>
public readonly record struct RecipientChange(
    int Index,
    RecipientStatus Status,
    int Attempts,
    DateTimeOffset? NextAttemptAt,
    DeliveryError? LastError,
    int NotifySent,
    bool FinalReported);

/// <summary>
/// A read-only snapshot of one spooled message's scheduling state (the envelope itself stays on disk;
/// load it with <see cref="ISpoolStore.ReadEnvelopeAsync"/>).
/// </summary>
/// <param name="Sequence">Commit order within this process; FIFO tie-breaker.</param>
/// <param name="FinalizedAt">Set when every recipient is final and the message is kept as a dead letter.</param>
public sealed record QueuedMessage(
    string Id,
    DateTimeOffset ArrivedAt,
    int Priority,
    long Sequence,
    IReadOnlyList<RecipientState> Recipients,
    DateTimeOffset? FinalizedAt);

/// <summary>A stored entry could not be read (truncated, bad checksum, missing file). The spool quarantines it.</summary>
public sealed class SpoolCorruptException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>The message is still being committed (read only by views that look at the whole index).</summary>
internal sealed class SpoolNotReadyException(string message) : IOException(message);

/// <summary>
/// A message in the spool as the scheduler sees it: fixed facts plus live, thread-safe reads of each
/// recipient's durable state. Only the spool changes it (through <see cref="ISpoolStore.UpdateRecipientsAsync"/>).
/// </summary>
public sealed class SpooledMessage
{
    internal readonly object Gate;
    internal readonly Slot[] Slots;
    internal long FinalizedTicks;   // 0 = not a dead letter
    internal readonly ulong Key;    // the 16-hex-digit queue id as a number (no string per message)
    private readonly sbyte _priority;
    internal bool Removed;
    // Where the message's bytes are: 0 = its own file under msg/; else the journal segment (and the offset of its
    // Body frame there) holding them inline. Set by the journal writer when the Body is durable, moved by compaction.
    internal int BodySegment;
    internal long BodyOffset;

    // ---- Owned by the one consumer of TakeCommitted (the scheduler loop); the spool never touches them.
    // Kept here (with each recipient's busy flag and version in its Slot) so the scheduler needs no second
    // object, arrays and dictionary per message: a million queued messages cost one object each.
    internal long CheckTicks;
    internal int CheckVersion;
    internal int BusyCount;
    internal bool Scheduled;
    internal bool ReportRetryArmed;
    internal bool Completing;
    internal bool Gone;
    internal bool Cancelled;   // the operator cancelled it: outcomes of work still in flight are dropped
    internal bool Requeuing;   // an operator's retry of this dead letter is at work (a second one is refused)

    internal SpooledMessage(object gate, ulong key, long arrivedTicks, int priority, long sequence, Slot[] slots)
    {
        Gate = gate;
        Key = key;
        ArrivedTicks = arrivedTicks;
        _priority = (sbyte)Math.Clamp(priority, -9, 9);
        Sequence = sequence;
        Slots = slots;
    }

    /// <summary>The queue id (formatted on each call from its numeric form).</summary>
    public string Id => MessageId.Format(Key);
    internal long ArrivedTicks { get; set; }   // set again when the operator re-opens a dead letter (its queue time starts over)
    /// <summary>
    /// When the message's time in the queue started: expire and notify count from it. The envelope's arrival, or
    /// later: the end of its hold (<see cref="MessageEnvelope.NotBefore"/>), or an operator's requeue of a dead
    /// letter. The real arrival (Received, DSN Arrival-Date) is <see cref="MessageEnvelope.ArrivedAt"/>.
    /// </summary>
    public DateTimeOffset ArrivedAt => new(ArrivedTicks, TimeSpan.Zero);
    /// <summary>RFC 6710 priority −9..9.</summary>
    public int Priority => _priority;
    /// <summary>Order in which this process committed or recovered it (FIFO tie-breaker).</summary>
    public long Sequence { get; }
    public int RecipientCount => Slots.Length;

    /// <summary>Scheduler-owned: recipient <paramref name="index"/> is being worked on.</summary>
    internal ref bool BusyOf(int index) => ref Slots[index].Busy;

    /// <summary>Scheduler-owned: bumped whenever the recipient changes hands (older heap/timer entries are stale).</summary>
    internal ref int VersionOf(int index) => ref Slots[index].Version;

    public DateTimeOffset? FinalizedAt
    {
        get { lock (Gate) return FinalizedTicks == 0 ? null : new DateTimeOffset(FinalizedTicks, TimeSpan.Zero); }
    }

    /// <summary>True once removed or quarantined.</summary>
    public bool IsRemoved { get { lock (Gate) return Removed; } }

    public RecipientState GetRecipient(int index)
    {
        lock (Gate) return Slots[index].ToState();
    }

    public QueuedMessage Snapshot()
    {
        lock (Gate)
        {
            var states = new RecipientState[Slots.Length];
            for (var i = 0; i < states.Length; i++) states[i] = Slots[i].ToState();
            return new QueuedMessage(Id, ArrivedAt, Priority, Sequence, states, FinalizedTicks == 0 ? null : new DateTimeOffset(FinalizedTicks, TimeSpan.Zero));
        }
    }
}

/// <summary>Compact in-memory form of <see cref="RecipientState"/> (bounded memory at a million recipients).</summary>
internal struct Slot
{
    public string Domain;
    public Route Route;
    public DeliveryError? Error;
    public long NextTicks;       // 0 = none
    public int Attempts;
    public int NotifySent;
    public RecipientStatus Status;
    public bool Reported;
    public bool Busy;            // scheduler-owned (fits in the padding, like Version)
    public int Version;          // scheduler-owned

    public readonly RecipientState ToState() => new(
        Domain, Route.Schedule, Route.Queue, Status, Attempts,
        NextTicks == 0 ? null : new DateTimeOffset(NextTicks, TimeSpan.Zero), Error, NotifySent, Reported);

    public void Apply(in RecipientChange change)
    {
        Status = change.Status;
        Attempts = change.Attempts;
        NextTicks = change.NextAttemptAt?.UtcTicks ?? 0;
        Error = change.LastError;
        NotifySent = change.NotifySent;
        Reported = change.FinalReported;
    }
}

/// <summary>An interned (schedule, queue) pair: thousands of recipients share one.</summary>
internal sealed record Route(string Schedule, string Queue);

/// <summary>Queue ids are 16 lowercase hex digits (11 of Unix milliseconds, a 20-bit counter): exactly a ulong.</summary>
internal static class MessageId
{
    public const int Length = 16;

    public static string Format(ulong key) => key.ToString("x16");

    public static bool TryParse(ReadOnlySpan<char> id, out ulong key)
    {
        key = 0;
        if (id.Length != Length) return false;
        foreach (var c in id)
        {
            int d = c is >= '0' and <= '9' ? c - '0' : c is >= 'a' and <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) return false;
            key = (key << 4) | (uint)d;
        }
        return true;
    }

    public static ulong Parse(string id) =>
        TryParse(id, out var key) ? key : throw new FormatException($"not a queue id: '{id}'");
}
