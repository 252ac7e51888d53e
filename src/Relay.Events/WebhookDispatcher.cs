// WebhookDispatcher: pushes each API client's delivery events, in log order, to its webhook. One event per POST,
// signed (X-Relay-Signature: sha256=<hex HMAC-SHA256(secret, body)>); 2xx = delivered, anything else is retried
// with capped exponential backoff (Polly), forever. A per-client cursor file (fsynced) advances only after a 2xx,
// so events not acknowledged before a stop or crash are sent again after a restart: at-least-once delivery.
using Relay.Spool;
using System.Buffers.Binary;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;
using Polly.Retry;
using System.IO.Hashing;

namespace Relay.Events;

public sealed class WebhookOptions
{
    /// <summary>Where the per-client cursor files live (default: <c>webhooks/</c> in the event log's directory).</summary>
    public string? CursorDirectory { get; init; }

    /// <summary>Timeout of one POST (connect + response).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>First retry delay; doubles per failed try (with jitter) up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromMinutes(5);
}

public sealed class WebhookDispatcher : IAsyncDisposable
{
    private const int ReadBatch = 256;
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly DeliveryEventLog _log;
    private readonly WebhookOptions _options;
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private readonly TimeProvider _clock;
    private readonly ILogger _logger;
    private readonly string _cursorDir;
    private readonly List<Worker> _workers;
    private readonly ResiliencePipeline<bool> _pipeline;
    private CancellationTokenSource? _stopping;
    private List<Task> _running = [];

    /// <param name="http">Optional shared client; by default the dispatcher creates (and disposes) its own.</param>
    public WebhookDispatcher(DeliveryEventLog log, IEnumerable<WebhookTarget> targets, WebhookOptions? options = null,
                             HttpClient? http = null, TimeProvider? clock = null, ILogger? logger = null)
    {
        _log = log;
        _options = options ?? new WebhookOptions();
        _clock = clock ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
        _ownsHttp = http is null;
        // The per-request timeout is ours (on the injected clock); the client's own is only a backstop.
        _http = http ?? new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _cursorDir = _options.CursorDirectory ?? Path.Combine(log.Directory, "webhooks");
        _workers = targets.Select(t => new Worker(t, Path.Combine(_cursorDir, FileNameOf(t.Client) + ".cursor"))).ToList();
        if (_workers.Select(w => w.Target.Client).Distinct(StringComparer.Ordinal).Count() != _workers.Count)
            throw new ArgumentException("one webhook per client", nameof(targets));
        _pipeline = new ResiliencePipelineBuilder<bool> { TimeProvider = _clock }
            .AddRetry(new RetryStrategyOptions<bool>
            {
                ShouldHandle = args => ValueTask.FromResult(args.Outcome switch
                {
                    { Exception: OperationCanceledException } when args.Context.CancellationToken.IsCancellationRequested => false,
                    { Exception: not null } => true,
                    { Result: false } => true,
                    _ => false,
                }),
                MaxRetryAttempts = int.MaxValue,   // forever: the cursor does not move until the receiver says 2xx
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = _options.InitialBackoff,
                MaxDelay = _options.MaxBackoff,
                OnRetry = args =>
                {
                    var w = args.Context.Properties.GetValue(WorkerKey, null!);
                    var reason = args.Outcome.Exception?.Message ?? w?.LastStatus ?? "not 2xx";
                    _logger.WebhookRetry(w?.Target.Client ?? "?", w?.InFlight ?? 0, reason, args.AttemptNumber + 1, args.RetryDelay);
                    return default;
                },
            })
            .Build();
    }

    private static readonly ResiliencePropertyKey<Worker> WorkerKey = new("relay.webhook.worker");

    /// <summary>Events acknowledged (2xx) by <paramref name="client"/>'s receiver so far: its durable cursor.</summary>
    public long AcknowledgedSequence(string client) =>
        _workers.FirstOrDefault(w => w.Target.Client == client) is { } w ? Interlocked.Read(ref w.Cursor) : 0;

    /// <summary>Loads the cursors and starts one background sender per target.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (_stopping is not null) throw new InvalidOperationException("already started");
        SpoolFiles.CreatePrivateDirectory(_cursorDir);
        var last = _log.LastSequence;
        foreach (var w in _workers)
        {
            w.Cursor = LoadCursor(w);
            if (w.Cursor > last)
            {
                _logger.CursorAhead(w.Target.Client, w.Cursor, last);
                w.Cursor = last;
            }
            w.Position = _log.Seek(w.Cursor);
        }
        _stopping = new CancellationTokenSource();
        _log.Appended += WakeAll;
        _running = _workers.Select(w => Task.Run(() => RunAsync(w, _stopping.Token), CancellationToken.None)).ToList();
        return Task.CompletedTask;
    }

    /// <summary>Stops sending. An event in flight is abandoned unacknowledged and sent again after the next start.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping is null || _stopping.IsCancellationRequested) return;
        _log.Appended -= WakeAll;
        await _stopping.CancelAsync();
        try { await Task.WhenAll(_running).WaitAsync(cancellationToken); }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested) { }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None);
        _stopping?.Dispose();
        if (_ownsHttp) _http.Dispose();
    }

    private void WakeAll()
    {
        foreach (var w in _workers) w.Signal.Set();
    }

    private sealed class Worker(WebhookTarget target, string cursorPath)
    {
        public readonly WebhookTarget Target = target;
        public readonly string CursorPath = cursorPath;
        public readonly byte[] Key = Encoding.UTF8.GetBytes(target.Secret);
        public readonly AsyncSignal Signal = new();
        public long Cursor;
        public DeliveryEventLog.Position Position;
        public long InFlight;
        public string? LastStatus;
    }

    private async Task RunAsync(Worker w, CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                var batch = _log.ReadAfter(ref w.Position, w.Cursor, w.Target.Client, ReadBatch);
                if (batch.Count == 0)
                {
                    await w.Signal.WaitAsync(stopping);   // set by every durable append after this read began
                    continue;
                }
                foreach (var e in batch)
                {
                    await SendAsync(w, e, stopping);
                    SaveCursor(w, e.Sequence);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested) { }
            catch (Exception e)
            {
                // Reading the log or writing the cursor failed (I/O): nothing is lost, try again later from the cursor.
                _logger.WebhookCrashed(w.Target.Client, e.Message);
                w.Position = _log.Seek(Interlocked.Read(ref w.Cursor));
                try { await Task.Delay(_options.MaxBackoff, _clock, stopping); }
                catch (OperationCanceledException) { }
            }
        }
    }

    /// <summary>POSTs one event until a 2xx (retrying with backoff), or until stopped.</summary>
    private async Task SendAsync(Worker w, DeliveryEvent e, CancellationToken stopping)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(e, Json);
        var signature = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(w.Key, body));
        w.InFlight = e.Sequence;
        var context = ResilienceContextPool.Shared.Get(stopping);
        context.Properties.Set(WorkerKey, w);
        try
        {
            await _pipeline.ExecuteAsync(async ctx =>
            {
                using var timeout = new CancellationTokenSource(_options.RequestTimeout, _clock);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(ctx.CancellationToken, timeout.Token);
                using var request = new HttpRequestMessage(HttpMethod.Post, w.Target.Url) { Content = new ByteArrayContent(body) };
                request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
                request.Headers.Add("X-Relay-Signature", signature);
                request.Headers.Add("X-Relay-Event-Id", e.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture));
                try
                {
                    using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, linked.Token);
                    w.LastStatus = $"HTTP {(int)response.StatusCode}";
                    return response.IsSuccessStatusCode;
                }
                catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ctx.CancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"no answer within {_options.RequestTimeout}");
                }
            }, context);
            stopping.ThrowIfCancellationRequested();
        }
        finally { ResilienceContextPool.Shared.Return(context); }
    }

    // ---------------------------------------------------------------- cursor files: i64 sequence + CRC-32

    private long LoadCursor(Worker w)
    {
        if (!File.Exists(w.CursorPath)) return 0;
        var bytes = File.ReadAllBytes(w.CursorPath);
        if (bytes.Length == 12 && Crc32.HashToUInt32(bytes.AsSpan(0, 8)) == BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8)))
            return BinaryPrimitives.ReadInt64LittleEndian(bytes);
        _logger.CursorUnreadable(w.Target.Client, w.CursorPath);
        return 0;
    }

    private static void SaveCursor(Worker w, long sequence)
    {
        Span<byte> bytes = stackalloc byte[12];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes[8..], Crc32.HashToUInt32(bytes[..8]));
        EventFiles.ReplaceDurably(w.CursorPath, bytes);
        Interlocked.Exchange(ref w.Cursor, sequence);
    }

    /// <summary>Client names become file names: letters, digits, '-' and '_' kept, anything else %XX.</summary>
    private static string FileNameOf(string client)
    {
        var sb = new StringBuilder();
        foreach (var b in Encoding.UTF8.GetBytes(client))
        {
            if (b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9' or (byte)'-' or (byte)'_')
                sb.Append((char)b);
            else sb.Append('%').Append(b.ToString("X2"));
        }
        return sb.ToString();
    }
}

/// <summary>A coalescing async auto-reset signal: Set before WaitAsync makes the next wait return at once.</summary>
internal sealed class AsyncSignal
{
    private TaskCompletionSource _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _lock = new();
    private bool _set;

    public void Set()
    {
        TaskCompletionSource tcs;
        lock (_lock)
        {
            _set = true;
            tcs = _tcs;
        }
        tcs.TrySetResult();
    }

    public async Task WaitAsync(CancellationToken cancellationToken)
    {
        Task task;
        lock (_lock)
        {
            if (_set) { _set = false; return; }
            if (_tcs.Task.IsCompleted) _tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            task = _tcs.Task;
        }
        await task.WaitAsync(cancellationToken);
        lock (_lock) _set = false;
    }
}
