// ApiSettings: [api], [api.client.NAME] and [templates] — the HTTP submission API of issue #10.
using System.Collections.Frozen;
using System.Globalization;
using System.Net;

namespace Relay.Config.Settings;

/// <summary>
/// <c>[api]</c>: the HTTP submission listener. Off (<see cref="Enabled"/> false) when <c>bind</c> is absent;
/// clients are still parsed and checked so a typo is caught before the API is switched on.
/// </summary>
public sealed record ApiSettings
{
    public static readonly ApiSettings Off = new();

    /// <summary><c>[api] bind</c>; null = the API is off.</summary>
    public IPEndPoint? Bind { get; init; }
    /// <summary><c>[api] max-batch</c>: most items in one <c>POST /api/v1/messages:batch</c>.</summary>
    public int MaxBatch { get; init; } = 100;
    /// <summary><c>[api] max-batch-size</c>: most bytes in one batch request body (all items together).</summary>
    public long MaxBatchSize { get; init; } = 25L * 1024 * 1024;
    /// <summary><c>[api] idempotency-window</c>: how long an <c>Idempotency-Key</c> maps to its message id.</summary>
    public TimeSpan IdempotencyWindow { get; init; } = TimeSpan.FromHours(24);
    /// <summary>Where the API keeps its own durable state (idempotency keys): <c>&lt;spool&gt;/api</c>.</summary>
    public string StateDirectory { get; init; } = "spool/api";
    /// <summary><c>[templates] path</c> (resolved), or null when no templates are configured.</summary>
    public string? TemplatesPath { get; init; }
    /// <summary>Client name → settings, from <c>[api.client.NAME]</c>.</summary>
    public IReadOnlyDictionary<string, ApiClientSettings> Clients { get; init; } = FrozenDictionary<string, ApiClientSettings>.Empty;

    public bool Enabled => Bind is not null;
}

/// <summary>What happens to a message over the client's <c>rate</c>.</summary>
public enum ApiRatePolicy
{
    /// <summary>Accept and queue it, released when the rate allows (deferral, never loss). The default.</summary>
    Hold,
    /// <summary>Refuse it with 429 and Retry-After; nothing is queued.</summary>
    Reject,
}

/// <summary>A rate "count per window", e.g. <c>"100/1m"</c>.</summary>
public sealed record ApiRate(int Count, TimeSpan Window)
{
    /// <summary>Time between messages at the sustained rate.</summary>
    public TimeSpan Interval => Window / Count;
    public override string ToString() => $"{Count.ToString(CultureInfo.InvariantCulture)}/{Window}";
}

/// <summary>One <c>[api.client.NAME]</c>.</summary>
/// <param name="Token">Plain or hashed (<c>pbkdf2-sha256:…</c>, <c>sha256:…</c>) like <c>[session.relay] users</c>.</param>
/// <param name="AllowedSenders">Addresses, <c>@domain</c> or <c>*@domain</c>; empty = any sender.</param>
/// <param name="DefaultPriority">Priority when a submission sets none (defaults to <c>[session.priority] default</c>).</param>
/// <param name="Rate">Submissions allowed per window; null = unlimited.</param>
/// <param name="MaxMessageSize">Largest built message in bytes (defaults to <c>[session] max-message-size</c>).</param>
/// <param name="Webhook">Where this client's delivery events are pushed; null = none.</param>
/// <param name="WebhookSecret">HMAC-SHA256 key for the webhook signature (required with a webhook).</param>
public sealed record ApiClientSettings(
    string Name,
    string Token,
    IReadOnlyList<string> AllowedSenders,
    int DefaultPriority,
    ApiRate? Rate,
    ApiRatePolicy RatePolicy,
    long MaxMessageSize,
    Uri? Webhook,
    string? WebhookSecret)
{
    /// <summary>Whether <paramref name="sender"/> matches <see cref="AllowedSenders"/> (case-insensitive).</summary>
    public bool MaySend(string sender)
    {
        if (AllowedSenders.Count == 0) return true;
        var at = sender.LastIndexOf('@');
        var domain = at < 0 ? "" : sender[(at + 1)..];
        foreach (var pattern in AllowedSenders)
        {
            if (pattern.StartsWith('@') || pattern.StartsWith("*@", StringComparison.Ordinal))
            {
                if (domain.Length > 0 && domain.Equals(pattern[(pattern.IndexOf('@') + 1)..], StringComparison.OrdinalIgnoreCase)) return true;
            }
            else if (sender.Equals(pattern, StringComparison.OrdinalIgnoreCase)) return true;
        }
        return false;
    }
}

/// <summary>The priority names of DESIGN.md's priority model (as for <c>X-Message-Priority:</c>).</summary>
public static class PriorityNames
{
    /// <summary><c>urgent</c>/<c>immediate</c> 6, <c>high</c> 3, <c>normal</c>/<c>medium</c> 0, <c>low</c> −3, <c>bulk</c> −6, or −9..9.</summary>
    public static bool TryParse(string? text, out int priority)
    {
        priority = 0;
        var v = text?.Trim().ToLowerInvariant();
        int? named = v switch
        {
            "urgent" or "immediate" => 6,
            "high" => 3,
            "normal" or "medium" => 0,
            "low" => -3,
            "bulk" => -6,
            _ => null,
        };
        if (named is { } n) { priority = n; return true; }
        return int.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out priority) && priority is >= -9 and <= 9;
    }
}
