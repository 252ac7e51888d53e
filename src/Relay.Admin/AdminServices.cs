// AdminServices: everything the admin API reads or commands, built once by the host (composition root).
using Relay.Admin.Metrics;
using Relay.Admin.Observation;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Admin;

public sealed class AdminServices
{
    public required ISpoolStore Spool { get; init; }
    public required QueueScheduler Scheduler { get; init; }
    /// <summary>Retry and cancel: the scheduler (<see cref="QueueScheduler"/> implements <see cref="IQueueControl"/>).</summary>
    public required IQueueControl Control { get; init; }
    public required RelayMetrics Metrics { get; init; }
    public required SlaTracker Sla { get; init; }
    public required DeliveryHistory History { get; init; }
    /// <summary>
    /// Re-reads and applies the config. Returns the errors (the old config stays) or success. Called by
    /// <c>POST /api/reload</c>; the host calls the same function on SIGHUP.
    /// </summary>
    public required Func<CancellationToken, Task<ReloadResult>> Reload { get; init; }
    public TimeProvider Clock { get; init; } = TimeProvider.System;
    /// <summary>The spool folder, for <c>relay_spool_bytes</c>; null leaves that metric out.</summary>
    public string? SpoolRoot { get; init; }
}
