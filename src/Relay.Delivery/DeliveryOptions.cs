// DeliveryOptions: the [delivery] keys that Relay.Config does not read yet (limits, pooling, TLS policy,
// smart-host routes). Defaults are the documented ones; README.md lists the TOML keys proposed for each.
using Microsoft.Extensions.Logging;
using Relay.Config.Strategy;
using Relay.Scheduler;

namespace Relay.Delivery;

/// <summary>Outbound delivery tuning beyond <c>DeliverySettings(Port, ConnectTimeout)</c>.</summary>
public sealed record DeliveryOptions
{
    /// <summary><c>max-connections-per-host</c>: concurrent SMTP connections to one remote address (Postfix-like small default).</summary>
    public int MaxConnectionsPerHost { get; init; } = 5;

    /// <summary><c>connection-wait</c>: how long a delivery waits for a free connection slot before it is deferred.</summary>
    public TimeSpan ConnectionWait { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary><c>max-messages-per-connection</c>: transactions on one connection before it is closed (QUIT).</summary>
    public int MaxMessagesPerConnection { get; init; } = 100;

    /// <summary><c>idle-timeout</c>: an unused pooled connection is closed after this long.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary><c>command-timeout</c>: per SMTP command/reply read or write (MailKit <c>Timeout</c>).</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary><c>rate</c>: per recipient domain, messages per window, e.g. <c>{ "example.com" = "100/1m" }</c>.</summary>
    public IReadOnlyDictionary<string, RateLimit> Rates { get; init; } = new Dictionary<string, RateLimit>();

    /// <summary><c>require-tls</c>: domains whose MX hosts must offer STARTTLS with a certificate that validates.</summary>
    public IReadOnlySet<string> RequireTls { get; init; } = new HashSet<string>();

    /// <summary><c>[delivery.smart-host.NAME]</c> tables.</summary>
    public IReadOnlyDictionary<string, SmartHost> SmartHosts { get; init; } = new Dictionary<string, SmartHost>();

    /// <summary>
    /// Static routes: recipient domain → smart host name, <c>"*"</c> for every domain. Used when there is no
    /// <see cref="RouteSelector"/> (the host sets the selector from the <c>[delivery] route</c> rules).
    /// </summary>
    public IReadOnlyDictionary<string, string> Routes { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// Overrides <see cref="Routes"/>: for one delivery (one recipient domain, one envelope) returns a smart host
    /// name, or null for MX delivery. Called once per attempt; must not throw.
    /// </summary>
    public Func<DeliveryRequest, string?>? RouteSelector { get; init; }

    /// <summary><c>dns-cache-max-ttl</c>: cap on how long any DNS answer is cached.</summary>
    public TimeSpan DnsCacheMaxTtl { get; init; } = TimeSpan.FromHours(1);

    /// <summary><c>dns-negative-ttl</c>: how long NXDOMAIN / no-data answers are cached when no SOA says otherwise.</summary>
    public TimeSpan DnsNegativeTtl { get; init; } = TimeSpan.FromMinutes(1);

    internal bool RequiresTls(string domain) =>
        RequireTls.Contains(domain) || RequireTls.Any(d => string.Equals(d, domain, StringComparison.OrdinalIgnoreCase));

    internal RateLimit? RateFor(string domain)
    {
        if (Rates.TryGetValue(domain, out var rate)) return rate;
        foreach (var (key, value) in Rates)
            if (string.Equals(key, domain, StringComparison.OrdinalIgnoreCase)) return value;
        return null;
    }

    internal SmartHost? SmartHostFor(DeliveryRequest request)
    {
        var name = RouteSelector is not null ? RouteSelector(request) : RouteName(request.Domain);
        if (name is null) return null;
        return SmartHosts.TryGetValue(name, out var host)
            ? host
            : throw new InvalidOperationException($"route names smart host '{name}', which is not defined");
    }

    /// <summary>
    /// The <c>[delivery] route</c> rules as a <see cref="RouteSelector"/>. A request holds recipients of one domain and
    /// one envelope, so routing is per domain + envelope: the rules see the first recipient, the sender, priority,
    /// source, size, client address, listener and AUTH identity (no headers: the loader refuses them). A rule that
    /// fails at run time is logged and its <c>else</c> route used.
    /// </summary>
    public static Func<DeliveryRequest, string?> RouteSelectorFor(DeliveryRoute route, ILogger? log = null) => request =>
    {
        var decision = route.Select(RouteContext(request));
        if (decision.Error is { } error)
            log?.LogWarning("{QueueId}: {Error}; using route '{Fallback}'", request.MessageId, error.Message, route.Fallback);
        return decision.SmartHost;
    };

    /// <summary>The expression context of one delivery request.</summary>
    internal static RecipientContext RouteContext(DeliveryRequest request)
    {
        var e = request.Envelope;
        return new RecipientContext
        {
            Recipient = request.Recipients.Count > 0 ? request.Recipients[0].Address : "@" + request.Domain,
            Sender = e.Sender,
            Priority = e.Priority,
            Source = e.Source,
            Size = e.Size,
            RemoteIp = e.RemoteIp ?? "",
            Listener = e.Listener ?? "",
            AuthenticatedAs = e.AuthenticatedAs ?? "",
        };
    }

    private string? RouteName(string domain)
    {
        foreach (var (key, value) in Routes)
            if (string.Equals(key, domain, StringComparison.OrdinalIgnoreCase)) return value;
        return Routes.TryGetValue("*", out var any) ? any : null;
    }
}

/// <summary>How a smart host connection is secured.</summary>
public enum SmartHostTls
{
    /// <summary>STARTTLS when offered, any certificate (like MX delivery).</summary>
    Opportunistic,
    /// <summary>STARTTLS required and the certificate must validate.</summary>
    StartTls,
    /// <summary>TLS from the first byte (port 465 style); the certificate must validate.</summary>
    Implicit,
    /// <summary>Plain text only.</summary>
    None,
}

/// <summary>A named relay host (<c>[delivery.smart-host.NAME]</c>): host, port, tls, username, password.</summary>
public sealed record SmartHost(string Host, int Port, SmartHostTls Tls = SmartHostTls.StartTls,
                               string? Username = null, string? Password = null)
{
    public override string ToString() => $"{Host}:{Port}";   // never prints the password
}

/// <summary>A rate such as <c>"100/1m"</c>: at most <see cref="Count"/> messages per <see cref="Window"/>.</summary>
public readonly record struct RateLimit(int Count, TimeSpan Window)
{
    public static RateLimit Parse(string text)
    {
        if (!TryParse(text, out var rate))
            throw new FormatException($"'{text}' is not a rate like \"100/1m\" (count/duration: ms, s, m, h, d)");
        return rate;
    }

    /// <summary>The config file's rate grammar (<see cref="Relay.Config.ConfigLoader.TryParseRate"/>).</summary>
    public static bool TryParse(string text, out RateLimit rate)
    {
        var ok = Relay.Config.ConfigLoader.TryParseRate(text, out var count, out var window);
        rate = ok ? new RateLimit(count, window) : default;
        return ok;
    }

    public override string ToString() => $"{Count}/{Window}";
}
