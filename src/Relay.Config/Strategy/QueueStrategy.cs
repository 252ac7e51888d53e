using Relay.Config.Settings;

namespace Relay.Config.Strategy;

/// <summary>The outcome of classifying one recipient.</summary>
/// <param name="Schedule">The schedule picked (never null: a failing rule falls through to <c>else</c>).</param>
/// <param name="Error">Set when a rule failed at run time and the fallback was used; the caller logs it.</param>
public readonly record struct StrategyDecision(ScheduleSettings Schedule, Exception? Error);

/// <summary>
/// The <c>[queue.strategy] schedule</c> rules, compiled once at load: tried in order, the first
/// true <c>if</c> picks its <c>then</c>, <c>else</c> is the fallback.
/// </summary>
public sealed partial class QueueStrategy
{
    /// <summary>Picks the schedule for one recipient.</summary>
    public StrategyDecision Classify(RecipientContext context) => throw new NotImplementedException();
}
