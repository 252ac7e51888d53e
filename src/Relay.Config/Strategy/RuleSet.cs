// RuleSet: an ordered list of compiled { if, then } rules with an else fallback, shared by
// [queue.strategy] schedule (result: a schedule) and [delivery] route (result: 'mx' or a smart host).
// Parsed and compiled once at config load (ConfigLoader.ReadRules); evaluation never throws.

namespace Relay.Config.Strategy;

/// <summary>One <c>{ if = "...", then = "..." }</c> rule; the <c>else</c> rule has no condition.</summary>
public sealed class StrategyRule
{
    internal StrategyRule(string owner, int line, string? condition, string result, Func<ExpressionScope, bool>? test,
        Func<ExpressionScope, string>? compute, string? literal)
    {
        Owner = owner; Line = line; Condition = condition; Result = result;
        Test = test; Compute = compute; Literal = literal;
    }

    /// <summary>What the rule belongs to, for messages: <c>strategy</c> or <c>route</c>.</summary>
    public string Owner { get; }
    public int Line { get; }
    /// <summary>The <c>if</c> expression text; null for <c>else</c>.</summary>
    public string? Condition { get; }
    /// <summary>The <c>then</c>/<c>else</c> expression text.</summary>
    public string Result { get; }
    internal Func<ExpressionScope, bool>? Test { get; }
    internal Func<ExpressionScope, string>? Compute { get; }
    /// <summary>The <c>then</c> value when it is a quoted literal (checked at load); null when computed.</summary>
    public string? Literal { get; }
}

/// <summary>
/// Rules tried in order; the first true <c>if</c> picks its <c>then</c>; <see cref="Fallback"/> (the
/// <c>else</c> literal) is used when none matches and when a rule fails at run time, so evaluation
/// always gives a value.
/// </summary>
/// <typeparam name="T">What a name resolves to (a schedule, a route target).</typeparam>
public sealed class RuleSet<T> where T : class
{
    private readonly StrategyRule[] _rules;
    private readonly T?[] _fixed;
    private readonly Func<string, T?> _resolve;
    private readonly string _kind;
    private readonly StrategyEnvironment _environment;

    /// <param name="resolve">Name → value, null when the name is not defined.</param>
    /// <param name="kind">What a name must be, for run-time errors, e.g. <c>[queue.schedule.*]</c>.</param>
    internal RuleSet(IReadOnlyList<StrategyRule> rules, T fallback, Func<string, T?> resolve, string kind, StrategyEnvironment environment)
    {
        _rules = [.. rules];
        _fixed = [.. _rules.Select(r => r.Literal is null ? null : resolve(r.Literal))];
        Fallback = fallback;
        _resolve = resolve;
        _kind = kind;
        _environment = environment;
    }

    /// <summary>The <c>if</c> rules in order (the <c>else</c> rule is <see cref="Fallback"/>).</summary>
    public IReadOnlyList<StrategyRule> Rules => _rules;

    public T Fallback { get; }

    /// <summary>The value for one recipient. Never throws: a failing rule gives the fallback and the error for the caller to log.</summary>
    public (T Value, StrategyException? Error) Evaluate(RecipientContext context)
    {
        var scope = new ExpressionScope(context, _environment);
        for (var i = 0; i < _rules.Length; i++)
        {
            var rule = _rules[i];
            try
            {
                if (!rule.Test!(scope)) continue;
                if (_fixed[i] is { } fixedValue) return (fixedValue, null);
                var name = rule.Compute!(scope);
                if (name is not null && _resolve(name) is { } computed) return (computed, null);
                return (Fallback, new StrategyException(rule, $"'then' gave '{name}', which is not {_kind}"));
            }
            catch (Exception e)
            {
                return (Fallback, new StrategyException(rule, e.Message, e));
            }
        }
        return (Fallback, null);
    }
}

/// <summary>A rule failed while evaluating it for a recipient; the fallback was used.</summary>
public sealed class StrategyException(StrategyRule rule, string message, Exception? inner = null)
    : Exception($"{rule.Owner} rule at line {rule.Line} ({rule.Condition}): {message}", inner)
{
    public StrategyRule Rule { get; } = rule;
}
