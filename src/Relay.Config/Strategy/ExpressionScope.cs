// ExpressionScope: what a compiled strategy expression sees. NCalc's lambda compiler binds an
// identifier to the property of the same name and a function call to the method of the same
// name, so the members here are spelled exactly as DESIGN.md's variables and functions.
// ReSharper disable InconsistentNaming
using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Relay.Config.Settings;

namespace Relay.Config.Strategy;

/// <summary>The config-wide data the expression functions read (local domains, named lists).</summary>
public sealed class StrategyEnvironment(LocalSettings local, NamedLists lists)
{
    public LocalSettings Local { get; } = local;
    public NamedLists Lists { get; } = lists;
}

/// <summary>One evaluation's variables and functions, wrapping a <see cref="RecipientContext"/>.</summary>
public sealed class ExpressionScope(RecipientContext context, StrategyEnvironment environment)
{
    /// <summary>The variable names an expression may use.</summary>
    public static readonly IReadOnlySet<string> Variables = new HashSet<string>(StringComparer.Ordinal)
    {
        "rcpt", "rcpt_domain", "sender", "sender_domain", "priority", "source", "size",
        "remote_ip", "listener", "authenticated_as", "subject",
    };

    /// <summary>Function name → number of arguments.</summary>
    public static readonly IReadOnlyDictionary<string, int> Functions = new Dictionary<string, int>(StringComparer.Ordinal)
    {
        ["is_local_domain"] = 2, ["header"] = 1, ["contains"] = 2, ["starts_with"] = 2,
        ["ends_with"] = 2, ["matches"] = 2, ["in_list"] = 2, ["if"] = 3,
    };

    private static readonly ConcurrentDictionary<string, Regex> RegexCache = new();
    private static readonly TimeSpan RegexTimeout = TimeSpan.FromMilliseconds(100);

    public string rcpt => context.Recipient;
    public string rcpt_domain => context.RecipientDomain;
    public string sender => context.Sender;
    public string sender_domain => context.SenderDomain;
    public int priority => context.Priority;
    public string source => context.Source;
    public long size => context.Size;
    public string remote_ip => context.RemoteIp;
    public string listener => context.Listener;
    public string authenticated_as => context.AuthenticatedAs;
    public string subject => context.Subject;

    /// <summary>True when <paramref name="domain"/> is one of <c>[local] domains</c>. The first argument
    /// (Stalwart's directory name, usually '*') is accepted and ignored: Relay has one domain list.</summary>
    public bool is_local_domain(string directory, string domain) => environment.Local.IsLocal(domain);

    /// <summary>The first value of header <paramref name="name"/>, or "" (also before DATA).</summary>
    public string header(string name) => context.Headers?.Invoke(name) ?? "";

    public bool contains(string value, string part) => (value ?? "").Contains(part ?? "", StringComparison.OrdinalIgnoreCase);
    public bool starts_with(string value, string part) => (value ?? "").StartsWith(part ?? "", StringComparison.OrdinalIgnoreCase);
    public bool ends_with(string value, string part) => (value ?? "").EndsWith(part ?? "", StringComparison.OrdinalIgnoreCase);

    /// <summary>.NET regular expression match (case-sensitive unless the pattern says <c>(?i)</c>).</summary>
    public bool matches(string pattern, string value) => GetRegex(pattern).IsMatch(value ?? "");

    public bool in_list(string name, string value) => environment.Lists.Contains(name, value);

    /// <summary>Compiles (once) and caches a pattern; throws <see cref="ArgumentException"/> when invalid.</summary>
    public static Regex GetRegex(string pattern) =>
        RegexCache.GetOrAdd(pattern, p => new Regex(p, RegexOptions.CultureInvariant | RegexOptions.Compiled, RegexTimeout));
}
