// ConfigLoader.Api: reads [api], [api.client.NAME] and [templates] (the HTTP submission API, issue #10).
using System.Net;
using Relay.Config.Settings;
using Relay.Config.Toml;

namespace Relay.Config;

public static partial class ConfigLoader
{
    private sealed partial class Builder
    {
        private ApiSettings ReadApi(Section? s, Section? templates, SessionSettings session, SpoolSettings spool)
        {
            string? templatesPath = null;
            if (templates is not null)
            {
                var p = templates.String("path");
                if (p is null) templates.Error("path", "required: the folder holding <name>.subject, <name>.txt and <name>.html");
                else if (!Directory.Exists(ResolvePath(p))) templates.Error("path", $"folder '{p}' does not exist");
                else templatesPath = ResolvePath(p);
                templates.ReportUnknownKeys();
            }
            var d = new ApiSettings { StateDirectory = Path.Combine(spool.Path, "api"), TemplatesPath = templatesPath };
            if (s is null) return d;

            IPEndPoint? bind = s.String("bind") is { } b ? s.ParseEndpoint("bind", b, null) : null;
            var maxBatch = (int)s.Integer("max-batch", d.MaxBatch, 1, 10_000);
            var maxBatchSize = s.Size("max-batch-size", d.MaxBatchSize);
            if (maxBatchSize < 1024) s.Error("max-batch-size", "must be at least 1KB");
            var window = s.Duration("idempotency-window", d.IdempotencyWindow);
            if (window <= TimeSpan.Zero) s.Error("idempotency-window", "must be longer than zero");
            var clients = new Dictionary<string, ApiClientSettings>(StringComparer.Ordinal);
            if (s.Table("client") is { } table)
            {
                foreach (var (name, c) in table.NamedTables())
                    if (ReadApiClient(name, c, session) is { } client) clients[name] = client;
            }
            if (bind is not null && clients.Count == 0)
                s.Error("bind", "the API is on but has no [api.client.NAME] with a token: nobody could use it");
            s.ReportUnknownKeys();
            return d with { Bind = bind, MaxBatch = maxBatch, MaxBatchSize = maxBatchSize, IdempotencyWindow = window, Clients = clients };
        }

        private static ApiClientSettings? ReadApiClient(string name, Section c, SessionSettings session)
        {
            var ok = true;
            var token = c.String("token");
            if (string.IsNullOrEmpty(token)) { c.Error("token", "required: the client's bearer token (plain, or a pbkdf2-sha256:/sha256: hash)"); ok = false; }

            var senders = c.StringList("allowed-senders") ?? [];
            foreach (var pattern in senders)
            {
                var at = pattern.IndexOf('@');
                var valid = at >= 0 && at == pattern.LastIndexOf('@') && at < pattern.Length - 1
                            && (at > 0 || pattern.Length > 1) && (pattern[..at] is not "*" || at == 1);
                if (!valid) { c.Error("allowed-senders", $"'{pattern}' is not an address, \"@domain\" or \"*@domain\""); ok = false; }
            }

            var priority = session.Priority.Default;
            if (c.Raw("default-priority") is { } raw)
            {
                var text = raw is TomlScalar { Value: var v } ? Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) : null;
                if (!PriorityNames.TryParse(text, out priority))
                { c.Error("default-priority", $"'{text}' is not urgent, high, normal, low, bulk or an integer -9..9"); ok = false; }
            }

            ApiRate? rate = null;
            if (c.String("rate") is { } rateText)
            {
                if (TryParseRate(rateText, out var count, out var per)) rate = new ApiRate(count, per);
                else { c.Error("rate", $"'{rateText}' is not a rate like \"100/1m\" (count/duration)"); ok = false; }
            }
            var policy = ApiRatePolicy.Hold;
            switch (c.String("rate-policy"))
            {
                case null or "hold": break;
                case "reject": policy = ApiRatePolicy.Reject; break;
                case var other: c.Error("rate-policy", $"'{other}' is not \"hold\" (queue and release at the rate) or \"reject\" (429)"); ok = false; break;
            }

            var maxSize = c.Size("max-message-size", session.MaxMessageSize);
            Uri? webhook = null;
            if (c.String("webhook") is { } url)
            {
                if (Uri.TryCreate(url, UriKind.Absolute, out var u) && (u.Scheme == Uri.UriSchemeHttp || u.Scheme == Uri.UriSchemeHttps)) webhook = u;
                else { c.Error("webhook", $"'{url}' is not an http:// or https:// URL"); ok = false; }
            }
            var secret = c.String("webhook-secret");
            if (c.Has("webhook") && string.IsNullOrEmpty(secret))
            { c.Error("webhook", "needs webhook-secret: the key that signs each delivery (HMAC-SHA256)"); ok = false; }
            c.ReportUnknownKeys();
            return ok ? new ApiClientSettings(name, token!, senders, priority, rate, policy, maxSize, webhook, secret) : null;
        }
    }
}
