// QueueStrategy: the [queue.strategy] schedule rules, parsed and compiled once at config load.
using Relay.Config.Settings;

namespace Relay.Config.Strategy;

/// <summary>The outcome of classifying one recipient.</summary>
/// <param name="Schedule">The schedule picked (never null: a failing rule falls through to <c>else</c>).</param>
/// <param name="Error">Set when a rule failed at run time and the fallback was used; the caller logs it.</param>
public readonly record struct StrategyDecision(ScheduleSettings Schedule, Exception? Error);

/// <summary>One <c>{ if = "...", then = "..." }</c> rule; the <c>else</c> rule has no condition.</summary>
public sealed class StrategyRule
{
    internal StrategyRule(int line, string? condition, string result, Func<ExpressionScope, bool>? test,
        Func<ExpressionScope, string>? compute, ScheduleSettings? fixedSchedule)
    {
        Line = line; Condition = condition; Result = result;
        Test = test; Compute = compute; FixedSchedule = fixedSchedule;
    }

    public int Line { get; }
    /// <summary>The <c>if</c> expression text; null for <c>else</c>.</summary>
    public string? Condition { get; }
    /// <summary>The <c>then</c>/<c>else</c> expression text.</summary>
    public string Result { get; }
    internal Func<ExpressionScope, bool>? Test { get; }
    internal Func<ExpressionScope, string>? Compute { get; }
    /// <summary>The schedule when the result is a literal (checked at load).</summary>
    internal ScheduleSettings? FixedSchedule { get; }
}

/// <summary>
/// Rules are tried in order; the first true <c>if</c> picks its <c>then</c>; <c>else</c> is the
/// fallback and must be a literal schedule name, so a recipient always gets a schedule even when
/// an expression fails at run time.
/// </summary>
public sealed class QueueStrategy
{
    private readonly StrategyRule[] _rules;
    private readonly ScheduleSettings _fallback;
    private readonly IReadOnlyDictionary<string, ScheduleSettings> _schedules;
    private readonly StrategyEnvironment _environment;

    internal QueueStrategy(IReadOnlyList<StrategyRule> rules, ScheduleSettings fallback,
        IReadOnlyDictionary<string, ScheduleSettings> schedules, StrategyEnvironment environment)
    {
        _rules = [.. rules];
        _fallback = fallback;
        _schedules = schedules;
        _environment = environment;
    }

    /// <summary>The <c>if</c> rules in order (the <c>else</c> rule is <see cref="Fallback"/>).</summary>
    public IReadOnlyList<StrategyRule> Rules => _rules;

    public ScheduleSettings Fallback => _fallback;

    /// <summary>Picks the schedule for one recipient. Never throws: a rule that fails is logged by the caller via <see cref="StrategyDecision.Error"/>.</summary>
    public StrategyDecision Classify(RecipientContext context)
    {
        var scope = new ExpressionScope(context, _environment);
        foreach (var rule in _rules)
        {
            try
            {
                if (!rule.Test!(scope)) continue;
                if (rule.FixedSchedule is { } fixedSchedule) return new(fixedSchedule, null);
                var name = rule.Compute!(scope);
                if (name is not null && _schedules.TryGetValue(name, out var computed)) return new(computed, null);
                return new(_fallback, new StrategyException(rule, $"'then' gave '{name}', which is not a [queue.schedule.*]"));
            }
            catch (Exception e)
            {
                return new(_fallback, new StrategyException(rule, e.Message, e));
            }
        }
        return new(_fallback, null);
    }
}

/// <summary>A strategy rule failed while classifying a recipient; the fallback schedule was used.</summary>
public sealed class StrategyException(StrategyRule rule, string message, Exception? inner = null)
    : Exception($"strategy rule at line {rule.Line} ({rule.Condition}): {message}", inner)
{
    public StrategyRule Rule { get; } = rule;
}
