// LiveStrategy: the one swappable holder of the running [queue] settings. Every stage that classifies new
// recipients (SMTP inbound, the DSN stage, the HTTP API) reads it, so a config reload swaps the strategy once for all.
using Relay.Config.Settings;

namespace Relay.Config.Strategy;

/// <summary>
/// The current strategy and schedules. Reads are lock-free (one volatile reference); <see cref="Swap"/> replaces
/// the whole <see cref="QueueSettings"/> at once, so a classification never mixes an old rule with a new schedule.
/// Named lists (<c>[lists]</c>) are compiled into the strategy, so they change with it.
/// </summary>
public sealed class LiveStrategy(QueueSettings settings)
{
    private volatile QueueSettings _current = settings ?? throw new ArgumentNullException(nameof(settings));

    /// <summary>The schedules in force now (the DSN stage reads a schedule's expiry for delay notices).</summary>
    public IReadOnlyDictionary<string, ScheduleSettings> Schedules => _current.Schedules;

    /// <summary>Picks the schedule for one recipient with the strategy in force now (thread-safe, never throws).</summary>
    public StrategyDecision Classify(RecipientContext context) => _current.Strategy.Classify(context);

    /// <summary>Makes <paramref name="settings"/> the strategy for every recipient classified from now on.</summary>
    public void Swap(QueueSettings settings) => _current = settings ?? throw new ArgumentNullException(nameof(settings));
}
