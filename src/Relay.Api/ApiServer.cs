// ApiServer: the HTTP submission API of issue #10 on [api] bind (Kestrel, minimal API routes). Clients
// authenticate with "Authorization: Bearer <token>" ([api.client.NAME] token, plain or hashed); submissions
// enter the spool like SMTP mail (SubmissionService). The OpenAPI document is at /api/v1/openapi.json.
using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Relay.Api.Submission;
using Relay.Api.Templates;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Events;
using Relay.Inbound.Policy;
using Relay.Spool;

namespace Relay.Api;

public sealed class ApiServer : IAsyncDisposable
{
    public const string IdempotencyHeader = "Idempotency-Key";
    private const int MaxKeyLength = 255;
    private const int BatchParallelism = 8;
    private static readonly object ClientItem = new();

    // The reloadable part of [api]: clients, templates, batch limits, and the token caches that belong to this
    // client table. Reconfigure swaps the whole object at once, so a removed token's cached verification goes
    // with the table it was verified against.
    private volatile LiveApi _live;
    private readonly ApiSettings _started;   // bind, state directory and idempotency window: fixed at start
    private readonly string _hostname;
    private readonly IMessageSpool _spool;
    private readonly Func<RecipientContext, StrategyDecision> _classify;
    private readonly IAcceptedMessages _accepted;
    private readonly IMessageStatusSource _status;
    private readonly TimeProvider _clock;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _log;
    // Unknown-token budgets, one per remote address (an IPv6 client's /64), so one address's flood of random
    // tokens cannot lock valid clients elsewhere out. Bounded: idle budgets (full again) are dropped when the
    // table is full; if it is still full, new addresses share one overflow budget.
    private readonly ConcurrentDictionary<string, ClientRate> _unknownTokens = new(StringComparer.Ordinal);
    private ClientRate? _unknownOverflow;
    internal const int UnknownTokenAddresses = 1024;
    private long _costlyVerifications;
    private IdempotencyStore? _idempotency;
    private SubmissionService? _submissions;
    private WebApplication? _app;

    public ApiServer(ApiSettings settings, string hostname, IMessageSpool spool, Func<RecipientContext, StrategyDecision> classify,
                     IAcceptedMessages accepted, IMessageStatusSource status, TimeProvider clock, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.Bind is null) throw new ArgumentException("[api] has no bind: the API is off", nameof(settings));
        _started = settings;
        _hostname = hostname;
        _spool = spool;
        _classify = classify;
        _accepted = accepted;
        _status = status;
        _clock = clock;
        _loggerFactory = loggerFactory;
        _log = loggerFactory.CreateLogger("Relay.Api");
        _live = LiveApi.Create(settings, null);
    }

    /// <summary>
    /// How many tokens that are in neither token cache may be checked against a hashed (<c>pbkdf2-sha256:</c>)
    /// client secret: a burst of <c>count</c>, then <c>count</c> per window. Beyond it an unknown token is answered
    /// 429 without deriving anything, so random tokens cannot turn the API into a PBKDF2 furnace. Default 20/1s,
    /// per remote address (IPv6: per /64).
    /// </summary>
    public ApiRate UnknownTokenRate { get; init; } = new(20, TimeSpan.FromSeconds(1));

    /// <summary>PBKDF2 derivations done for authentication so far (tests, diagnostics).</summary>
    internal long CostlyVerifications => Interlocked.Read(ref _costlyVerifications);

    /// <summary>
    /// Applies a reloaded <c>[api]</c>/<c>[templates]</c>: clients (tokens, allowed senders, priorities, rates,
    /// sizes), the templates folder, <c>max-batch</c> and <c>max-batch-size</c> take effect for the next request;
    /// the token caches are dropped with the old client table, so a removed or changed token is refused at once,
    /// except the verified tokens of clients whose name and token are unchanged (a valid PBKDF2 client is not
    /// derived, nor budgeted, again). A client whose rate and rate-policy are unchanged keeps its rate state. <c>bind</c>, <c>idempotency-window</c> and webhooks
    /// are not applied here (restart).
    /// </summary>
    public void Reconfigure(ApiSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        _live = LiveApi.Create(settings, _live);
        _log.Reconfigured(settings.Clients.Count);
    }

    /// <summary>
    /// Back-pressure (DESIGN.md <c>[queue.virtual] max-size</c>): false when a virtual queue is full; a submission
    /// with a recipient for it is refused with 503 and Retry-After, as SMTP answers 452 4.3.1. Null = never full.
    /// </summary>
    public Func<string, bool>? QueueHasRoom { get; init; }

    /// <summary>The bound address after <see cref="StartAsync"/> (the real port when bind has port 0).</summary>
    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.None, 0);

    /// <summary><c>http://host:port/</c> after <see cref="StartAsync"/>.</summary>
    public Uri BaseAddress => new($"http://{(EndPoint.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{EndPoint.Address}]" : EndPoint.Address.ToString())}:{EndPoint.Port}/");

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_app is not null) throw new InvalidOperationException("already started");
        _idempotency = IdempotencyStore.Open(_started.StateDirectory, _started.IdempotencyWindow, _clock, _log);
        _submissions = new SubmissionService(_hostname, _spool, _classify, _accepted, _clock, () => _live, _idempotency, _log)
        {
            QueueHasRoom = QueueHasRoom,
        };

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = "Relay.Api" });
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        builder.Services.AddLogging();   // TryAdds: keeps the factory above
        builder.Services.AddRouting();
        builder.Services.AddOpenApi("v1", o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Info.Title = "Relay HTTP submission API";
            document.Info.Description = "Submit mail into Relay's queues (issue #10). Authenticate with Authorization: Bearer <token>.";
            return Task.CompletedTask;
        }));
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = null;   // each route sets its own limit from the client's max-message-size
            k.Listen(_started.Bind!);
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
        if (_idempotency is { } store) await store.DisposeAsync();
        _idempotency = null;
    }

    // ---------------------------------------------------------------- authentication, errors

    private async Task GuardAsync(HttpContext context, RequestDelegate next)
    {
        var path = context.Request.Path;
        if (!path.Equals("/api/v1/openapi.json", StringComparison.Ordinal))
        {
            var client = Authenticate(context.Request.Headers.Authorization.ToString(), context.Connection.RemoteIpAddress, out var throttled);
            if (throttled)
            {
                _log.Unauthorized(context.Request.Method, path, context.Connection.RemoteIpAddress?.ToString());
                await WriteAsync(context, ApiOutcome.Problem(429, "too-many-unknown-tokens", "Too many unknown tokens",
                    "too many tokens to verify right now; retry shortly") with { RetryAfter = TimeSpan.FromSeconds(1) });
                return;
            }
            if (client is null)
            {
                _log.Unauthorized(context.Request.Method, path, context.Connection.RemoteIpAddress?.ToString());
                context.Response.Headers.WWWAuthenticate = "Bearer";
                await WriteAsync(context, ApiOutcome.Problem(401, "unauthorized", "Unauthorized",
                    "send a client token as Authorization: Bearer <token>"));
                return;
            }
            context.Items[ClientItem] = client;
        }
        try
        {
            await next(context);
            // Routing refuses a body that is not JSON by itself (415, no body): say why, like every other error.
            if (context.Response.StatusCode == 415 && !context.Response.HasStarted) await WriteAsync(context, UnsupportedMediaType);
        }
        catch (Exception e) when (!context.RequestAborted.IsCancellationRequested && !context.Response.HasStarted)
        {
            _log.RequestFailed(e, context.Request.Method, path);
            await WriteAsync(context, ApiOutcome.Problem(500, "internal-error", "Internal error", "the request failed; nothing was queued unless an id was returned"));
        }
    }

    /// <summary>
    /// The client whose token this is (constant-time compare, hashed secrets allowed), or null. A token's answer
    /// depends only on the client table, so both outcomes are cached by the token's SHA-256 for as long as that
    /// table is in force: a PBKDF2 secret is derived once per token, and a wrong token that comes back costs a
    /// hash. New unknown tokens against a table with PBKDF2 secrets are limited by <see cref="UnknownTokenRate"/>
    /// per remote address (<paramref name="throttled"/>).
    /// </summary>
    private ApiClientSettings? Authenticate(string authorization, IPAddress? remote, out bool throttled)
    {
        const string Bearer = "Bearer ";
        throttled = false;
        if (!authorization.StartsWith(Bearer, StringComparison.OrdinalIgnoreCase)) return null;
        var token = authorization[Bearer.Length..].Trim();
        if (token.Length == 0) return null;
        var live = _live;
        var digest = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(token)));
        if (live.Verified.TryGetValue(digest, out var known)) return known;
        if (live.Failed.ContainsKey(digest)) return null;
        // Plain and sha256 secrets first (cheap; every one is checked, no early exit). PBKDF2 secrets only for a
        // token none of those took, and only within the budget.
        ApiClientSettings? found = null;
        foreach (var client in live.Settings.Clients.Values)
            if (!IsCostly(client.Token) && SecretVerifier.Verify(client.Token, token) && found is null) found = client;
        if (found is null && live.Costly > 0)
        {
            var now = _clock.GetUtcNow();
            if (!UnknownTokenBudget(remote, now).TryTake(now, out _)) { throttled = true; return null; }
            Interlocked.Add(ref _costlyVerifications, live.Costly);
            foreach (var client in live.Settings.Clients.Values)
                if (IsCostly(client.Token) && SecretVerifier.Verify(client.Token, token) && found is null) found = client;
        }
        var cache = found is null ? live.Failed : live.Verified;
        if (cache.Count >= LiveApi.CacheLimit) cache.Clear();   // bounded; the next lookups just verify again
        cache[digest] = found;
        return found;
    }

    private ClientRate UnknownTokenBudget(IPAddress? remote, DateTimeOffset now)
    {
        var key = AddressKey(remote);
        if (_unknownTokens.TryGetValue(key, out var budget)) return budget;
        if (_unknownTokens.Count >= UnknownTokenAddresses)
        {
            foreach (var (k, b) in _unknownTokens)
                if (b.IsIdle(now)) _unknownTokens.TryRemove(k, out _);
            if (_unknownTokens.Count >= UnknownTokenAddresses)
                return LazyInitializer.EnsureInitialized(ref _unknownOverflow, () => new ClientRate(UnknownTokenRate));
        }
        return _unknownTokens.GetOrAdd(key, _ => new ClientRate(UnknownTokenRate));
    }

    /// <summary>The budget's key: an IPv4 address (also when mapped into IPv6), or an IPv6 address's /64.</summary>
    internal static string AddressKey(IPAddress? remote)
    {
        if (remote is null) return "";
        if (remote.IsIPv4MappedToIPv6) remote = remote.MapToIPv4();
        if (remote.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6) return remote.ToString();
        return Convert.ToHexString(remote.GetAddressBytes(), 0, 8) + "/64";
    }

    internal static bool IsCostly(string secret) => secret.StartsWith("pbkdf2-sha256:", StringComparison.Ordinal);

    private static ApiClientSettings ClientOf(HttpContext context) => (ApiClientSettings)context.Items[ClientItem]!;

    private static async Task WriteAsync(HttpContext context, ApiOutcome outcome)
    {
        context.Response.StatusCode = outcome.Status;
        context.Response.ContentType = outcome.Body is ProblemResponse ? ApiJson.ProblemContentType : "application/json; charset=utf-8";
        if (outcome.RetryAfter is { } after)
            context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(after.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (outcome.Body is AcceptedResponse accepted) context.Response.Headers.Location = $"/api/v1/messages/{accepted.Id}";
        await JsonSerializer.SerializeAsync(context.Response.Body, outcome.Body, outcome.Body.GetType(), ApiJson.Options, context.RequestAborted);
    }

    /// <summary>An IResult that writes an outcome (so the routes are typed delegates the OpenAPI generator sees).</summary>
    private sealed class OutcomeResult(ApiOutcome outcome) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext) => WriteAsync(httpContext, outcome);
    }

    // ---------------------------------------------------------------- routes

    private void Map(IEndpointRouteBuilder app)
    {
        app.MapOpenApi("/api/v1/openapi.json");
        app.MapPost("/api/v1/messages", (Delegate)SubmitAsync)
            .WithName("SubmitMessage").WithSummary("Queue one message")
            .Accepts<MessageRequest>("application/json")
            .Produces<AcceptedResponse>(202)
            .Produces<ProblemResponse>(400, ApiJson.ProblemContentType).Produces<ProblemResponse>(401, ApiJson.ProblemContentType)
            .Produces<ProblemResponse>(403, ApiJson.ProblemContentType).Produces<ProblemResponse>(413, ApiJson.ProblemContentType)
            .Produces<ProblemResponse>(422, ApiJson.ProblemContentType).Produces<ProblemResponse>(429, ApiJson.ProblemContentType);
        app.MapPost("/api/v1/messages:batch", (Delegate)SubmitBatchAsync)
            .WithName("SubmitBatch").WithSummary("Queue up to [api] max-batch messages; one result per item")
            .Accepts<List<MessageRequest>>("application/json")
            .Produces<BatchResponse>(207)
            .Produces<ProblemResponse>(400, ApiJson.ProblemContentType).Produces<ProblemResponse>(413, ApiJson.ProblemContentType);
        app.MapGet("/api/v1/messages/{id}", (Delegate)StatusAsync)
            .WithName("GetMessage").WithSummary("Delivery status of a message this client submitted")
            .Produces<MessageStatusView>(200).Produces<ProblemResponse>(404, ApiJson.ProblemContentType);
        app.MapGet("/api/v1/templates", (Delegate)Templates)
            .WithName("ListTemplates").WithSummary("Templates in [templates] path")
            .Produces<TemplatesResponse>(200);
    }

    private async Task<IResult> SubmitAsync(HttpContext context)
    {
        var client = ClientOf(context);
        var key = IdempotencyKey(context, out var keyProblem);
        if (keyProblem is not null) return new OutcomeResult(keyProblem);
        var (body, problem) = await ReadBodyAsync(context, BodyLimit(client, 1), "for this client's max-message-size");
        if (problem is not null) return new OutcomeResult(problem);
        MessageRequest? request;
        try
        {
            request = JsonSerializer.Deserialize<MessageRequest>(body, ApiJson.Options);
        }
        catch (JsonException e)
        {
            return new OutcomeResult(JsonProblem(e));
        }
        if (request is null) return new OutcomeResult(BodyProblem("expected a JSON object"));
        var outcome = await _submissions!.SubmitAsync(client, request, key, SubmissionService.Hash(body), RemoteIp(context), context.RequestAborted);
        return new OutcomeResult(outcome);
    }

    private async Task<IResult> SubmitBatchAsync(HttpContext context)
    {
        var client = ClientOf(context);
        var key = IdempotencyKey(context, out var keyProblem);
        if (keyProblem is not null) return new OutcomeResult(keyProblem);
        var settings = _live.Settings;
        var (body, problem) = await ReadBodyAsync(context, Math.Min(BodyLimit(client, settings.MaxBatch), settings.MaxBatchSize),
            "for this client's max-message-size × [api] max-batch, capped by [api] max-batch-size; nothing was queued");
        if (problem is not null) return new OutcomeResult(problem);
        List<JsonElement>? items;
        try
        {
            items = JsonSerializer.Deserialize<List<JsonElement>>(body, ApiJson.Options);
        }
        catch (JsonException)
        {
            return new OutcomeResult(BodyProblem("expected a JSON array of messages"));
        }
        if (items is null || items.Count == 0) return new OutcomeResult(BodyProblem("expected a non-empty JSON array of messages"));
        if (items.Count > settings.MaxBatch)
            return new OutcomeResult(ApiOutcome.Problem(413, "batch-too-large", "Batch too large",
                $"{items.Count} messages; at most {settings.MaxBatch} per batch ([api] max-batch); nothing was queued"));

        // Items run a few at a time so their spool commits share fsyncs without every item's MIME in memory at
        // once; results keep the request's order. Each item ends in its own result: one that throws is a 500
        // for that item, never for the batch, so the ids of the items already queued are always answered.
        var remote = RemoteIp(context);
        var results = new BatchItemResult[items.Count];
        await Parallel.ForEachAsync(Enumerable.Range(0, items.Count),
            new ParallelOptions { MaxDegreeOfParallelism = BatchParallelism, CancellationToken = CancellationToken.None }, async (index, _) =>
        {
            var item = items[index];
            ApiOutcome outcome;
            try
            {
                var request = item.ValueKind == JsonValueKind.Object ? item.Deserialize<MessageRequest>(ApiJson.Options) : null;
                outcome = request is null
                    ? BodyProblem("expected a JSON object")
                    : await _submissions!.SubmitAsync(client, request, key is null ? null : $"{key}#{index}",
                        SubmissionService.Hash(Encoding.UTF8.GetBytes(item.GetRawText())), remote, context.RequestAborted);
            }
            catch (JsonException e)
            {
                outcome = JsonProblem(e);
            }
            catch (Exception e) when (!context.RequestAborted.IsCancellationRequested)
            {
                _log.RequestFailed(e, context.Request.Method, context.Request.Path);
                outcome = ApiOutcome.Problem(500, "internal-error", "Internal error", "this item failed; it was not queued");
            }
            catch (OperationCanceledException)
            {
                outcome = ApiOutcome.Problem(499, "cancelled", "Cancelled", "the client went away; this item was not queued");
            }
            results[index] = outcome.Body switch
            {
                AcceptedResponse a => new BatchItemResult(index, outcome.Status, a.Id, a.Recipients, null) { NotBefore = a.NotBefore },
                ProblemResponse p => new BatchItemResult(index, outcome.Status, null, null, p),
                _ => new BatchItemResult(index, outcome.Status, null, null, null),
            };
        });
        return new OutcomeResult(new ApiOutcome(207, new BatchResponse(results)));
    }

    private async Task<IResult> StatusAsync(HttpContext context, string id)
    {
        var client = ClientOf(context);
        var view = await _status.FindAsync(id, context.RequestAborted) ?? await FromSpoolAsync(id, context.RequestAborted);
        // Another client's message is "not found" too: ids are not secrets, but other clients' mail is.
        if (view is null || !string.Equals(view.Client, client.Name, StringComparison.Ordinal))
            return new OutcomeResult(ApiOutcome.Problem(404, "not-found", "Not found", $"no message {id} submitted by this client"));
        return new OutcomeResult(new ApiOutcome(200, view));
    }

    /// <summary>
    /// A message the status source does not know (its accepted event failed to be written after the 202) but the
    /// spool still holds: answered from the spool's own per-recipient state, so a 202 is never followed by a 404
    /// while the message is queued.
    /// </summary>
    private async ValueTask<MessageStatusView?> FromSpoolAsync(string id, CancellationToken cancellationToken)
    {
        if (_spool is not ISpoolStore store || !IsMessageId(id) || store.Find(id) is not { } message) return null;
        // A read-only view: an unreadable file (or a transient error such as EMFILE) must not quarantine queued
        // mail, so this read never does; the scheduler decides when it needs the message.
        if (await store.TryReadEnvelopeAsync(id, cancellationToken) is not { } envelope) return null;   // removed meanwhile, or unreadable
        if (envelope.Source != SubmissionService.Source || envelope.AuthenticatedAs is not { } client) return null;
        var recipients = new List<RecipientStatusView>(envelope.Recipients.Count);
        for (var i = 0; i < envelope.Recipients.Count && i < message.RecipientCount; i++)
        {
            var r = message.GetRecipient(i);
            var state = r.Status switch
            {
                RecipientStatus.Delivered => DeliveryEventType.Delivered,
                RecipientStatus.Failed => DeliveryEventType.Failed,
                RecipientStatus.Expired => DeliveryEventType.Expired,
                _ => r.Attempts > 0 ? DeliveryEventType.Deferred : "queued",
            };
            var reply = r.LastError is { } e ? $"{e.Code} {e.EnhancedStatus} {e.Text}".Trim() : null;
            recipients.Add(new RecipientStatusView(envelope.Recipients[i].Address, state, r.Schedule, r.Queue, r.Attempts, null,
                r.IsFinal ? null : r.NextAttemptAt, reply));
        }
        return new MessageStatusView(id, client, envelope.Sender, envelope.Priority, envelope.ArrivedAt, message.FinalizedAt, recipients, []);
    }

    private static bool IsMessageId(string id) => id.Length == 16 && id.All(char.IsAsciiHexDigitLower);

    private IResult Templates(HttpContext context) => new OutcomeResult(new ApiOutcome(200, new TemplatesResponse(_live.Templates.List())));

    // ---------------------------------------------------------------- request helpers

    private static string? IdempotencyKey(HttpContext context, out ApiOutcome? problem)
    {
        problem = null;
        var values = context.Request.Headers[IdempotencyHeader];
        if (values.Count == 0) return null;
        var key = values.ToString().Trim().Trim('"');
        if (values.Count > 1 || key.Length is 0 or > MaxKeyLength || key.Any(c => c is < ' ' or > '~'))
        {
            var errors = new Dictionary<string, string[]> { [IdempotencyHeader] = [$"one value of 1 to {MaxKeyLength} printable ASCII characters"] };
            problem = ApiOutcome.Problem(400, "invalid-request", "Invalid request", "bad Idempotency-Key header; nothing was queued", errors);
            return null;
        }
        return key;
    }

    /// <summary>Base64 grows content by 4/3; JSON adds escaping and field names: allow twice the message size, plus slack.</summary>
    private static long BodyLimit(ApiClientSettings client, int items) =>
        (long)Math.Min(long.MaxValue / 4, (double)client.MaxMessageSize * 2 * items + 64 * 1024);

    private static async Task<(byte[] Body, ApiOutcome? Problem)> ReadBodyAsync(HttpContext context, long limit, string why)
    {
        var mediaType = context.Request.ContentType?.Split(';')[0].Trim();
        if (!string.Equals(mediaType, "application/json", StringComparison.OrdinalIgnoreCase))
            return ([], UnsupportedMediaType);
        if (context.Request.ContentLength is { } declared && declared > limit)
            return ([], TooLarge(limit, why));
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } feature) feature.MaxRequestBodySize = null;
        using var buffer = new MemoryStream();
        var chunk = new byte[64 * 1024];
        int n;
        while ((n = await context.Request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            if (buffer.Length + n > limit) return ([], TooLarge(limit, why));
            buffer.Write(chunk, 0, n);
        }
        return (buffer.ToArray(), null);
    }

    private static readonly ApiOutcome UnsupportedMediaType =
        ApiOutcome.Problem(415, "unsupported-media-type", "Unsupported media type", "send the request as Content-Type: application/json");

    private static ApiOutcome TooLarge(long limit, string why) =>
        ApiOutcome.Problem(413, "request-too-large", "Request too large", $"the request body is over {limit} bytes {why}");

    private static ApiOutcome BodyProblem(string message) =>
        ApiOutcome.Problem(400, "invalid-request", "Invalid request", "the request body is not valid; nothing was queued",
            new Dictionary<string, string[]> { ["body"] = [message] });

    /// <summary>A JSON error as a problem naming the field (<c>$.attachments[0].content</c> → <c>attachments[0].content</c>).</summary>
    private static ApiOutcome JsonProblem(JsonException e)
    {
        var field = e.Path is { Length: > 1 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : "body";
        var message = e.Message;
        var cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut > 0) message = message[..cut];
        if (message.StartsWith("The JSON value could not be converted", StringComparison.Ordinal)) message = "wrong type for this field";
        if (e.Path is null or "$") message = "not valid JSON: " + message;
        return ApiOutcome.Problem(400, "invalid-request", "Invalid request", "the request body is not valid; nothing was queued",
            new Dictionary<string, string[]> { [field] = [message] });
    }

    private static string RemoteIp(HttpContext context) => context.Connection.RemoteIpAddress?.ToString() ?? "";
}

/// <summary>
/// The reloadable part of the API (see <see cref="ApiServer.Reconfigure"/>): settings, per-client rates,
/// templates, and the token caches that are valid for exactly this client table.
/// </summary>
internal sealed class LiveApi
{
    public const int CacheLimit = 4096;

    private LiveApi(ApiSettings settings, IReadOnlyDictionary<string, ClientRate> rates, TemplateStore templates)
    {
        Settings = settings;
        Rates = rates;
        Templates = templates;
        Costly = settings.Clients.Values.Count(c => ApiServer.IsCostly(c.Token));
    }

    public ApiSettings Settings { get; }
    public IReadOnlyDictionary<string, ClientRate> Rates { get; }
    public TemplateStore Templates { get; }
    /// <summary>Clients whose secret is PBKDF2: the derivations one unknown token costs.</summary>
    public int Costly { get; }
    /// <summary>SHA-256 of a token → its client.</summary>
    public ConcurrentDictionary<string, ApiClientSettings?> Verified { get; } = new(StringComparer.Ordinal);
    /// <summary>SHA-256 of tokens that matched no client (value null).</summary>
    public ConcurrentDictionary<string, ApiClientSettings?> Failed { get; } = new(StringComparer.Ordinal);

    /// <summary>A new table; a client whose rate and rate policy did not change keeps its slots, an unchanged templates folder its cache.</summary>
    public static LiveApi Create(ApiSettings settings, LiveApi? previous)
    {
        var rates = new Dictionary<string, ClientRate>(StringComparer.Ordinal);
        foreach (var c in settings.Clients.Values.Where(c => c.Rate is not null))
        {
            rates[c.Name] = previous is not null && previous.Rates.TryGetValue(c.Name, out var old)
                            && previous.Settings.Clients.TryGetValue(c.Name, out var was) && was.Rate == c.Rate
                            && was.RatePolicy == c.RatePolicy   // hold's far-future slots must not become reject's 429s
                ? old : new ClientRate(c.Rate!);
        }
        var templates = previous is not null && previous.Settings.TemplatesPath == settings.TemplatesPath
            ? previous.Templates : new TemplateStore(settings.TemplatesPath);
        var live = new LiveApi(settings, rates, templates);
        // A verified token stays verified for a client whose name and token did not change (now mapped to its new
        // settings): a reload of templates or rates must not make every PBKDF2 client derive, and be budgeted, again.
        if (previous is not null)
            foreach (var (digest, was) in previous.Verified)
                if (was is not null && settings.Clients.TryGetValue(was.Name, out var now) && now.Token == was.Token)
                    live.Verified[digest] = now;
        return live;
    }
}
