// AdminServer: the admin HTTP API of DESIGN.md on [admin] bind (Kestrel, minimal API routes). Every route
// but /healthz needs the X-API-Token header; handlers read scheduler and spool snapshots and send commands
// through IQueueControl and the host's reload callback.
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Admin.Api;
using Relay.Admin.Metrics;
using Relay.Config.Settings;
using Relay.Scheduler;

namespace Relay.Admin;

public sealed class AdminServer : IAsyncDisposable
{
    public const string TokenHeader = "X-API-Token";

    private readonly AdminSettings _settings;
    private readonly AdminServices _services;
    private readonly AdminOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _log;
    private readonly byte[] _tokenHash;
    private readonly MessageQuery _messages;
    private readonly SpoolCensus _census;
    private WebApplication? _app;

    /// <exception cref="ArgumentException">The settings carry no token: the admin API is off (DESIGN.md).</exception>
    public AdminServer(AdminSettings settings, AdminServices services, AdminOptions? options = null, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(services);
        if (string.IsNullOrEmpty(settings.Token)) throw new ArgumentException("[admin] has no token: the admin API stays off", nameof(settings));
        _settings = settings;
        _services = services;
        _options = options ?? new AdminOptions();
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _log = _loggerFactory.CreateLogger("Relay.Admin");
        _tokenHash = SHA256.HashData(Encoding.UTF8.GetBytes(settings.Token));
        _messages = new MessageQuery(services.Spool, _options);
        _census = new SpoolCensus(services.Spool, services.Clock, _options, services.SpoolRoot);
    }

    /// <summary>The bound address after <see cref="StartAsync"/> (the real port when bind has port 0).</summary>
    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.None, 0);

    /// <summary><c>http://host:port</c> after <see cref="StartAsync"/>.</summary>
    public Uri BaseAddress => new($"http://{(EndPoint.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{EndPoint.Address}]" : EndPoint.Address.ToString())}:{EndPoint.Port}/");

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_app is not null) throw new InvalidOperationException("already started");
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        builder.Services.AddRoutingCore();
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Listen(_settings.Bind);
        });
        var app = builder.Build();
        app.Use(GuardAsync);
        app.UseRouting();
        Map(app);
        await app.StartAsync(cancellationToken);
        _app = app;
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var uri = new Uri(address);
        EndPoint = new IPEndPoint(IPAddress.Parse(uri.Host.Trim('[', ']')), uri.Port);
        _log.Listening(BaseAddress.ToString());
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_app is { } app) await app.StopAsync(cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is { } app)
        {
            await app.StopAsync(CancellationToken.None);
            await app.DisposeAsync();
            _app = null;
        }
    }

    // ---------------------------------------------------------------- token, errors

    /// <summary>Every route but /healthz needs the token; compared as SHA-256 digests in constant time.</summary>
    private async Task GuardAsync(HttpContext context, RequestDelegate next)
    {
        if (!context.Request.Path.Equals("/healthz", StringComparison.Ordinal))
        {
            var given = context.Request.Headers[TokenHeader].ToString();
            var ok = given.Length > 0
                     && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), _tokenHash);
            if (!ok)
            {
                _log.Unauthorized(context.Request.Method, context.Request.Path, context.Connection.RemoteIpAddress?.ToString());
                await WriteJsonAsync(context, 401, new ErrorResponse("unauthorized", $"send the admin token in the {TokenHeader} header"));
                return;
            }
        }
        try
        {
            await next(context);
        }
        catch (Exception e) when (!context.RequestAborted.IsCancellationRequested && !context.Response.HasStarted)
        {
            _log.RequestFailed(e, context.Request.Method, context.Request.Path);
            await WriteJsonAsync(context, 500, new ErrorResponse("internal error", e.Message));
        }
    }

    private static async Task WriteJsonAsync<T>(HttpContext context, int status, T body)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json; charset=utf-8";
        await JsonSerializer.SerializeAsync(context.Response.Body, body, ApiJson.Options, context.RequestAborted);
    }

    // ---------------------------------------------------------------- routes

    private void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/healthz", context =>
        {
            context.Response.ContentType = "text/plain; charset=utf-8";
            return context.Response.WriteAsync("ok\n", context.RequestAborted);
        });
        app.MapGet("/api/queues", QueuesAsync);
        app.MapGet("/api/messages", MessagesAsync);
        app.MapGet("/api/messages/{id}", MessageAsync);
        app.MapGet("/api/messages/{id}/content", ContentAsync);
        app.MapPost("/api/messages/{id}/retry", RetryAsync);
        app.MapDelete("/api/messages/{id}", CancelAsync);
        app.MapPost("/api/reload", ReloadAsync);
        app.MapGet("/metrics", MetricsAsync);
    }

    private async Task QueuesAsync(HttpContext context)
    {
        var facts = await _census.GetAsync(context.RequestAborted);
        await WriteJsonAsync(context, 200, new QueuesResponse(QueueViews(facts)));
    }

    internal IReadOnlyList<QueueView> QueueViews(SpoolFacts facts)
    {
        var now = _services.Clock.GetUtcNow();
        return _services.Scheduler.GetQueueStats().OrderBy(q => q.Name, StringComparer.Ordinal).Select(q =>
        {
            var p = _services.Sla.Percentiles(q.Name);
            var target = _services.Sla.TargetOf(q.Name);
            // The scheduler knows its oldest pending arrival per queue; the census walk is only a fallback.
            var at = q.OldestPendingArrival ?? (facts.OldestPendingByQueue.TryGetValue(q.Name, out var walked) ? walked : (DateTimeOffset?)null);
            double? oldest = q.Depth > 0 && at is { } a ? Math.Max(0, Math.Round((now - a).TotalSeconds, 3)) : q.Depth > 0 ? null : 0;
            return new QueueView(q.Name, q.Depth, q.InFlight, q.ThreadsPerNode, q.MaxSize, oldest,
                new LatencyView(p?.P50, p?.P95, p?.P99), target?.TotalSeconds, _services.Sla.Violations(q.Name),
                target is { } t && p is not null ? p.P95 <= t.TotalSeconds : null, p?.Samples ?? 0);
        }).ToList();
    }

    private async Task MessagesAsync(HttpContext context)
    {
        var q = context.Request.Query;
        var limit = _options.DefaultPageSize;
        if (q["limit"].ToString() is { Length: > 0 } l && (!int.TryParse(l, out limit) || limit < 1))
        {
            await WriteJsonAsync(context, 400, new ErrorResponse("bad request", "limit must be a positive integer"));
            return;
        }
        limit = Math.Min(limit, _options.MaxPageSize);
        var status = q["status"].ToString();
        if (status.Length > 0 && !MessageFilter.Statuses.Contains(status))
        {
            await WriteJsonAsync(context, 400, new ErrorResponse("bad request", "status must be one of " + string.Join(", ", MessageFilter.Statuses)));
            return;
        }
        var filter = new MessageFilter(Blank(q["queue"]), Blank(q["domain"]), Blank(q["sender"]), Blank(status));
        var page = await _messages.ListAsync(filter, limit, Blank(q["cursor"]), context.RequestAborted);
        await WriteJsonAsync(context, 200, page);
    }

    private static string? Blank(Microsoft.Extensions.Primitives.StringValues v) => v.ToString() is { Length: > 0 } s ? s : null;

    private static string IdOf(HttpContext context) => (string)context.Request.RouteValues["id"]!;

    private async Task MessageAsync(HttpContext context)
    {
        var detail = await _messages.DetailAsync(IdOf(context), _services.History, context.RequestAborted);
        if (detail is null) await NotFoundAsync(context);
        else await WriteJsonAsync(context, 200, detail);
    }

    /// <summary>The original message bytes (for dead letters: what would be re-queued), as message/rfc822.</summary>
    private async Task ContentAsync(HttpContext context)
    {
        var id = IdOf(context);
        if (_services.Spool.Find(id) is null) { await NotFoundAsync(context); return; }
        Stream content;
        try { content = await _services.Spool.OpenContentAsync(id, context.RequestAborted); }
        catch (IOException) { await NotFoundAsync(context); return; }   // damaged (now quarantined), or still being committed
        await using (content)
        {
            context.Response.ContentType = "message/rfc822";
            await content.CopyToAsync(context.Response.Body, context.RequestAborted);
        }
    }

    private Task NotFoundAsync(HttpContext context) =>
        WriteJsonAsync(context, 404, new ErrorResponse("not found", $"no message {IdOf(context)} in the queue"));

    private async Task RetryAsync(HttpContext context)
    {
        var id = IdOf(context);
        var result = await _services.Control.RetryAsync(id, context.RequestAborted);
        _census.Invalidate();
        await ActionReplyAsync(context, result, new ActionResponse(id, result.RequeuedAs is null ? "retry" : "requeue", result.Recipients, result.RequeuedAs));
    }

    private async Task CancelAsync(HttpContext context)
    {
        var id = IdOf(context);
        var bounceText = context.Request.Query["bounce"].ToString();
        if (bounceText.Length > 0 && !bool.TryParse(bounceText, out _))
        {
            await WriteJsonAsync(context, 400, new ErrorResponse("bad request", "bounce must be true or false"));
            return;
        }
        var bounce = bounceText.Length > 0 && bool.Parse(bounceText);
        var result = await _services.Control.CancelAsync(id, bounce, context.RequestAborted);
        _census.Invalidate();
        await ActionReplyAsync(context, result, new ActionResponse(id, "cancel", result.Recipients, Bounced: bounce));
    }

    private Task ActionReplyAsync(HttpContext context, ControlResult result, ActionResponse ok) => result.Outcome switch
    {
        ControlOutcome.NotFound => NotFoundAsync(context),
        ControlOutcome.NothingToDo => WriteJsonAsync(context, 409, new ErrorResponse("nothing to do", result.Detail)),
        _ => WriteJsonAsync(context, 200, ok),
    };

    private async Task ReloadAsync(HttpContext context)
    {
        ReloadResult result;
        try
        {
            result = await _services.Reload(context.RequestAborted);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _services.Metrics.Reloads["error"].Increment();
            throw;
        }
        var errors = result.Errors.Select(e => new ReloadErrorView(e.File, e.Line, e.Key, e.Message)).ToList();
        if (result.Ok)
        {
            _services.Metrics.Reloads["ok"].Increment();
            _log.Reloaded(result.Summary ?? "ok");
            await WriteJsonAsync(context, 200, new ReloadResponse(true, result.Summary, errors));
            return;
        }
        _services.Metrics.Reloads["refused"].Increment();
        foreach (var e in result.Errors) _log.ReloadRefused(e.ToString());
        await WriteJsonAsync(context, 422, new ReloadResponse(false, result.Summary ?? "the new config is invalid; the running config is kept", errors));
    }

    private async Task MetricsAsync(HttpContext context)
    {
        var facts = await _census.GetAsync(context.RequestAborted);
        var text = MetricsText(facts);
        context.Response.ContentType = PrometheusText.ContentType;
        await context.Response.WriteAsync(text, context.RequestAborted);
    }

    internal string MetricsText(SpoolFacts facts)
    {
        var m = _services.Metrics;
        var w = new PrometheusText();
        w.Header("relay_inbound_sessions_total", "counter", "SMTP sessions opened.").Sample("relay_inbound_sessions_total", m.InboundSessions.Value);
        w.Header("relay_inbound_sessions_active", "gauge", "SMTP sessions open now.").Sample("relay_inbound_sessions_active", m.InboundSessionsActive.Value);
        w.Family(m.InboundMessages).Family(m.InboundRecipients);

        var queues = QueueViews(facts);
        w.Header("relay_queue_depth", "gauge", "Recipients not yet final, per virtual queue.");
        foreach (var q in queues) w.Sample("relay_queue_depth", q.Depth, ("queue", q.Name));
        w.Header("relay_queue_in_flight", "gauge", "Deliveries running now, per virtual queue.");
        foreach (var q in queues) w.Sample("relay_queue_in_flight", q.InFlight, ("queue", q.Name));
        w.Header("relay_queue_threads_per_node", "gauge", "Delivery slots of the virtual queue on this node.");
        foreach (var q in queues) w.Sample("relay_queue_threads_per_node", q.ThreadsPerNode, ("queue", q.Name));
        w.Header("relay_queue_oldest_age_seconds", "gauge", "Age of the oldest message with a recipient waiting in the virtual queue.");
        foreach (var q in queues) w.Sample("relay_queue_oldest_age_seconds", q.OldestAgeSeconds ?? 0, ("queue", q.Name));

        w.Family(m.DeliveryAttempts).Family(m.Deliveries).Histograms(m.DeliveryLatency);

        w.Header("relay_sla_seconds", "gauge", "Delivery time target of the virtual queue (strictest schedule sla feeding it).");
        foreach (var q in queues.Where(q => q.SlaSeconds is not null)) w.Sample("relay_sla_seconds", q.SlaSeconds!.Value, ("queue", q.Name));
        w.Header("relay_sla_latency_seconds", "gauge", "Arrival to delivery time over the SLA window, by quantile.");
        foreach (var q in queues.Where(q => q.LatencySamples > 0))
        {
            w.Sample("relay_sla_latency_seconds", q.LatencySeconds.P50!.Value, ("queue", q.Name), ("quantile", "0.5"));
            w.Sample("relay_sla_latency_seconds", q.LatencySeconds.P95!.Value, ("queue", q.Name), ("quantile", "0.95"));
            w.Sample("relay_sla_latency_seconds", q.LatencySeconds.P99!.Value, ("queue", q.Name), ("quantile", "0.99"));
        }
        w.Header("relay_sla_violations_total", "counter", "Recipients that reached a final state later than the SLA target.");
        foreach (var q in queues.Where(q => q.SlaSeconds is not null || q.SlaViolations > 0))
            w.Sample("relay_sla_violations_total", q.SlaViolations, ("queue", q.Name));

        w.Family(m.DsnsSent);

        w.Header("relay_spool_messages", "gauge", "Messages in the spool: live ones and dead letters kept for retention.")
            .Sample("relay_spool_messages", facts.LiveMessages, ("state", "live"))
            .Sample("relay_spool_messages", facts.DeadLetters, ("state", "dead_letter"));
        w.Header("relay_spool_recipients_pending", "gauge", "Recipients not yet final, all queues.")
            .Sample("relay_spool_recipients_pending", queues.Sum(q => q.Depth));
        if (facts.Bytes is { } bytes)
            w.Header("relay_spool_bytes", "gauge", "Bytes on disk under the spool folder (messages, journal, quarantine).").Sample("relay_spool_bytes", bytes);
        w.Family(m.Reloads);
        return w.ToString();
    }
}
