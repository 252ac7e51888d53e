// AdminOptions: knobs of the admin stage that the config file does not (yet) carry. README lists the TOML keys
// proposed for them; until Relay.Config reads those, the host uses these defaults.
namespace Relay.Admin;

public sealed record AdminOptions
{
    /// <summary>Messages per page of <c>/api/messages</c> when <c>limit</c> is not given.</summary>
    public int DefaultPageSize { get; init; } = 100;

    /// <summary>Largest <c>limit</c> accepted.</summary>
    public int MaxPageSize { get; init; } = 1000;

    /// <summary>Sliding window for the latency percentiles (<c>[admin] sla-window</c>).</summary>
    public TimeSpan SlaWindow { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>Most samples kept per queue in the window (memory bound; oldest dropped first).</summary>
    public int SlaMaxSamples { get; init; } = 10_000;

    /// <summary>p95 is recomputed for the warning at most this often per queue.</summary>
    public TimeSpan SlaEvaluateInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>At most one "p95 over target" warning per queue per interval (STYLE 8.14).</summary>
    public TimeSpan SlaWarnInterval { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>Queue ages and spool size come from a scan of the spool; it is repeated at most this often.</summary>
    public TimeSpan CensusInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Messages whose attempts and DSNs are remembered in memory for <c>/api/messages/{id}</c>.</summary>
    public int HistoryMessages { get; init; } = 10_000;

    /// <summary>Attempts remembered per message (the newest are kept).</summary>
    public int HistoryAttemptsPerMessage { get; init; } = 50;

    /// <summary>How long dead letters stay (<c>[spool] retention</c>), to show when one goes; null = not shown.</summary>
    public TimeSpan? Retention { get; init; }
}
