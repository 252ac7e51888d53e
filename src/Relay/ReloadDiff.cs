// ReloadDiff: which changed config keys a reload cannot apply to the running process (they need a restart),
// by comparing the sections' values key by key (records holding lists do not compare by value).
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Inbound;

namespace Relay;

internal static class ReloadDiff
{
    /// <summary>Keys (<c>section.key</c>) whose value differs between the running and the new config but apply only at restart.</summary>
    public static IReadOnlyList<string> NeedsRestart(RelaySettings running, RelaySettings next)
    {
        var changed = new List<string>();
        Compare("spool", Spool(running.Spool), Spool(next.Spool), changed);
        Compare("resolver", Resolver(running.Resolver), Resolver(next.Resolver), changed);
        Compare("delivery", Delivery(running.Delivery), Delivery(next.Delivery), changed);
        Compare("admin", Admin(running.Admin), Admin(next.Admin), changed);
        Compare("dsn", Dsn(running.Dsn), Dsn(next.Dsn), changed);
        Compare("api", ApiAtStart(running.Api), ApiAtStart(next.Api), changed);
        if (running.Server.Hostname != next.Server.Hostname) changed.Add("server.hostname (delivery EHLO and DSNs; new SMTP sessions use it now)");
        return changed;
    }

    public static string Describe(ListenerReload r)
    {
        var parts = new List<string>();
        if (r.Started.Count > 0) parts.Add("started " + string.Join(", ", r.Started));
        if (r.Stopped.Count > 0) parts.Add("stopped " + string.Join(", ", r.Stopped) + " (open sessions finish)");
        if (r.Rebound.Count > 0) parts.Add("rebound " + string.Join(", ", r.Rebound));
        if (r.Refused.Count > 0) parts.Add("REFUSED " + string.Join("; ", r.Refused));
        return parts.Count == 0 ? "listeners unchanged" : "listeners: " + string.Join(", ", parts);
    }

    private static void Compare(string section, Dictionary<string, string> a, Dictionary<string, string> b, List<string> changed)
    {
        foreach (var key in a.Keys.Union(b.Keys).Order(StringComparer.Ordinal))
        {
            if (a.GetValueOrDefault(key) != b.GetValueOrDefault(key)) changed.Add($"{section}.{key}");
        }
    }

    private static Dictionary<string, string> Spool(SpoolSettings s) => new()
    {
        ["path"] = s.Path,
        ["retention"] = s.Retention.ToString(),
    };

    private static Dictionary<string, string> Resolver(ResolverSettings s) => new()
    {
        ["nameservers"] = string.Join(",", s.Nameservers),
        ["timeout"] = s.Timeout.ToString(),
    };

    private static Dictionary<string, string> Delivery(DeliverySettings d)
    {
        var keys = new Dictionary<string, string>
        {
            ["port"] = d.Port.ToString(),
            ["connect-timeout"] = d.ConnectTimeout.ToString(),
            ["command-timeout"] = d.CommandTimeout.ToString(),
            ["max-connections-per-host"] = d.MaxConnectionsPerHost.ToString(),
            ["connection-wait"] = d.ConnectionWait.ToString(),
            ["max-messages-per-connection"] = d.MaxMessagesPerConnection.ToString(),
            ["idle-timeout"] = d.IdleTimeout.ToString(),
            ["require-tls"] = string.Join(",", d.RequireTls.Order(StringComparer.OrdinalIgnoreCase)),
            ["rate"] = string.Join(",", d.Rates.OrderBy(r => r.Key, StringComparer.OrdinalIgnoreCase).Select(r => $"{r.Key}={r.Value.Count}/{r.Value.Window}")),
            ["route"] = Rules(d.Route),
            ["dns-cache-max-ttl"] = d.DnsCacheMaxTtl.ToString(),
            ["dns-negative-ttl"] = d.DnsNegativeTtl.ToString(),
            ["hold"] = d.Hold.ToString(),
        };
        foreach (var (name, host) in d.SmartHosts) keys["smart-host." + name] = host.ToString();
        return keys;
    }

    private static string Rules(DeliveryRoute? route) =>
        route is null ? "" : string.Join(";", route.Rules.Select(r => $"{r.Condition}=>{r.Result}")) + ";else " + route.Fallback;

    private static Dictionary<string, string> Admin(AdminSettings a) => new()
    {
        ["bind"] = a.Bind.ToString(),
        ["token"] = Hash(a.Token),
    };

    /// <summary>Whether the part of <c>[api]</c>/<c>[templates]</c> that <see cref="Relay.Api.ApiServer.Reconfigure"/> applies changed.</summary>
    public static bool ApiChanged(ApiSettings running, ApiSettings next) => !ApiLive(running).OrderBy(kv => kv.Key).SequenceEqual(ApiLive(next).OrderBy(kv => kv.Key));

    /// <summary>What a running API keeps until restart: its listener, the idempotency window and webhook targets.</summary>
    private static Dictionary<string, string> ApiAtStart(ApiSettings a)
    {
        var keys = new Dictionary<string, string>
        {
            ["bind"] = a.Bind?.ToString() ?? "",
            ["idempotency-window"] = a.IdempotencyWindow.ToString(),
        };
        // Only clients with a webhook: adding or removing a client without one is applied live, not a restart.
        foreach (var c in a.Clients.Values.Where(c => c.Webhook is not null))
        {
            keys[$"client.{c.Name}.webhook"] = c.Webhook!.ToString();
            keys[$"client.{c.Name}.webhook-secret"] = Hash(c.WebhookSecret);
        }
        return keys;
    }

    private static Dictionary<string, string> ApiLive(ApiSettings a)
    {
        var keys = new Dictionary<string, string>
        {
            ["max-batch"] = a.MaxBatch.ToString(),
            ["max-batch-size"] = a.MaxBatchSize.ToString(),
            ["templates.path"] = a.TemplatesPath ?? "",
        };
        foreach (var c in a.Clients.Values)
        {
            keys[$"client.{c.Name}"] = string.Join("|", Hash(c.Token), string.Join(",", c.AllowedSenders), c.DefaultPriority, c.Rate?.ToString() ?? "",
                c.RatePolicy, c.MaxMessageSize);
        }
        return keys;
    }

    private static string Hash(string? secret) =>
        secret is null ? "" : Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(secret)));

    private static Dictionary<string, string> Dsn(DsnSettings d) => new()
    {
        ["from-name"] = d.FromName,
        ["from-address"] = d.FromAddress,
        ["full-return-limit"] = d.FullReturnLimit.ToString(),
    };
}
