namespace Relay.Spool;

/// <summary>RFC 3461 RET: what a DSN carries back of the original.</summary>
public enum DsnReturn { Unspecified, Full, Headers }

/// <summary>RFC 3461 NOTIFY. <see cref="Default"/> (no parameter) means FAILURE,DELAY (DESIGN.md).</summary>
[Flags]
public enum DsnNotify { Default = 0, Never = 1, Success = 2, Failure = 4, Delay = 8 }

/// <summary>BODY= on MAIL FROM.</summary>
public enum BodyType { Unspecified, SevenBit, EightBitMime, BinaryMime }

/// <summary>
/// Everything the queue must know about an accepted message besides its bytes: the envelope,
/// its RFC 3461 parameters and where it came from. Written once at commit and never changed;
/// per-recipient delivery state is kept separately by the spool.
/// </summary>
public sealed record MessageEnvelope
{
    /// <summary>Queue id, allocated by <see cref="IMessageSpool.Begin"/>.</summary>
    public required string Id { get; init; }
    /// <summary>Envelope sender; empty string for the null sender <c>&lt;&gt;</c>.</summary>
    public required string Sender { get; init; }
    public required DateTimeOffset ArrivedAt { get; init; }
    public required IReadOnlyList<RecipientEntry> Recipients { get; init; }
    /// <summary>RFC 6710 priority −9..9 as decided at accept time.</summary>
    public int Priority { get; init; }
    /// <summary><c>smtp</c>, <c>dsn</c> or <c>api</c>.</summary>
    public string Source { get; init; } = "smtp";
    /// <summary>RFC 3461 ENVID (xtext-decoded), or null.</summary>
    public string? EnvelopeId { get; init; }
    public DsnReturn Return { get; init; }
    public BodyType Body { get; init; }
    public bool SmtpUtf8 { get; init; }
    /// <summary>Size in bytes of the stored message (what delivery will send).</summary>
    public long Size { get; init; }
    public string? RemoteIp { get; init; }
    public string? HeloName { get; init; }
    public string? AuthenticatedAs { get; init; }
    public string? Listener { get; init; }
    /// <summary>No delivery attempt before this time (an API client's rate holds the message); null = at once.</summary>
    public DateTimeOffset? NotBefore { get; init; }
}

/// <summary>One recipient as accepted, with the schedule the strategy gave it.</summary>
public sealed record RecipientEntry
{
    public required string Address { get; init; }
    /// <summary>RFC 3461 ORCPT as received, e.g. <c>rfc822;user@example.test</c> (xtext-decoded), or null.</summary>
    public string? OriginalRecipient { get; init; }
    public DsnNotify Notify { get; init; }
    /// <summary>Name of the <c>[queue.schedule.*]</c> the strategy picked.</summary>
    public required string Schedule { get; init; }
    /// <summary>Name of that schedule's virtual queue.</summary>
    public required string Queue { get; init; }
}
