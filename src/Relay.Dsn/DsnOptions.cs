// DsnOptions: the DSN stage's knobs that [dsn] does not carry yet (proposed TOML keys in README.md).
namespace Relay.Dsn;

/// <summary>
/// Tunables of the DSN stage. Defaults follow Postfix's bounce(8) where DESIGN.md is silent. The host fills
/// them from <c>[dsn]</c> once Relay.Config reads the proposed keys (README.md); until then the defaults apply.
/// </summary>
public sealed record DsnOptions
{
    /// <summary>
    /// <c>[dsn] full-return-limit</c> (default <c>"50KB"</c>, Postfix's <c>bounce_size_limit</c>): when the sender
    /// gave no RET, a failure DSN returns the whole original only up to this size, and its headers above it.
    /// RET=FULL is honoured whatever the size; RET=HDRS always returns headers only.
    /// </summary>
    public long FullReturnLimit { get; init; } = 50 * 1024;

    /// <summary>
    /// How many (message, recipient) final reports are remembered so that a report the scheduler repeats after a
    /// partial failure does not send the same DSN twice (in memory only: a restart may repeat one, never lose one).
    /// </summary>
    public int RememberedReports { get; init; } = 50_000;
}
