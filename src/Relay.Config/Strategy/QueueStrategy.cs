// QueueStrategy: the [queue.strategy] schedule rules, parsed and compiled once at config load.
using Relay.Config.Settings;

namespace Relay.Config.Strategy;

/// <summary>The outcome of classifying one recipient.</summary>
/// <param name="Schedule">The schedule picked (never null: a failing rule falls through to <c>else</c>).</param>
/// <param name="Error">Set when a rule failed at run time and the fallback was used; the caller logs it.</param>
public readonly record struct StrategyDecision(ScheduleSettings Schedule, Exception? Error);

/// <summary>
/// Rules are tried in order; the first true <c>if</c> picks its <c>then</c>; <c>else</c> is the
/// fallback and must be a literal schedule name, so a recipient always gets a schedule even when
/// an expression fails at run time.
/// </summary>
public sealed class QueueStrategy
{
    private readonly RuleSet<ScheduleSettings> _rules;

    internal QueueStrategy(RuleSet<ScheduleSettings> rules) => _rules = rules;

    /// <summary>The <c>if</c> rules in order (the <c>else</c> rule is <see cref="Fallback"/>).</summary>
    public IReadOnlyList<StrategyRule> Rules => _rules.Rules;

    public ScheduleSettings Fallback => _rules.Fallback;

    /// <summary>Picks the schedule for one recipient. Never throws: a rule that fails is logged by the caller via <see cref="StrategyDecision.Error"/>.</summary>
    public StrategyDecision Classify(RecipientContext context)
    {
        var (schedule, error) = _rules.Evaluate(context);
        return new(schedule, error);
    }
}
