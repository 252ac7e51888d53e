// DeliveryRoute: the [delivery] route rules — the same NCalc rules as [queue.strategy] schedule,
// whose names are 'mx' (normal MX delivery) or a [delivery.smart-host.NAME].
namespace Relay.Config.Strategy;

/// <summary>Where one delivery goes.</summary>
/// <param name="SmartHost">The <c>[delivery.smart-host.NAME]</c> name, or null for MX delivery.</param>
/// <param name="Error">Set when a rule failed at run time and the fallback was used; the caller logs it.</param>
public readonly record struct RouteDecision(string? SmartHost, Exception? Error);

/// <summary>
/// <c>[delivery] route</c>: rules evaluated per delivery (one recipient domain and one envelope), so
/// routing is per domain + envelope: the context is the request's first recipient, its sender,
/// priority, source, size, client and listener. Headers and subject are not available at delivery
/// and are refused at load.
/// </summary>
public sealed class DeliveryRoute
{
    /// <summary>The reserved route name for normal MX delivery.</summary>
    public const string Mx = "mx";

    /// <summary>Variables that only exist while the message is being accepted.</summary>
    internal static readonly IReadOnlySet<string> Unavailable = new HashSet<string>(StringComparer.Ordinal) { "subject", "header" };

    private readonly RuleSet<string> _rules;

    internal DeliveryRoute(RuleSet<string> rules) => _rules = rules;

    /// <summary>The <c>if</c> rules in order.</summary>
    public IReadOnlyList<StrategyRule> Rules => _rules.Rules;

    /// <summary>The <c>else</c> name: <c>mx</c> or a smart host.</summary>
    public string Fallback => _rules.Fallback;

    /// <summary>Picks the route for one delivery. Never throws.</summary>
    public RouteDecision Select(RecipientContext context)
    {
        var (name, error) = _rules.Evaluate(context);
        return new(name == Mx ? null : name, error);
    }
}
