// AdminHarness: a real FileSpool and QueueScheduler in a temp folder on a fake clock, the delivery observers,
// and the admin API on 127.0.0.1:0, with an HttpClient that sends the token (and one that does not).
using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Relay.Admin.Api;
using Relay.Admin.Metrics;
using Relay.Admin.Observation;
using Relay.Config;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Admin.Tests.Harness;

public sealed class AdminHarness : IAsyncDisposable
{
    public const string Token = "s3cret-admin-token";
    public static readonly DateTimeOffset Epoch = new(2026, 11, 23, 9, 0, 0, TimeSpan.Zero);

    private readonly string _dir;

    private AdminHarness(string dir)
    {
        _dir = dir;
        Clock = new FakeTimeProvider(Epoch);
        Agent = new TestAgent();
        Reports = new RecordingReports();
        Metrics = new RelayMetrics();
        Options = new AdminOptions { CensusInterval = TimeSpan.Zero, SlaEvaluateInterval = TimeSpan.Zero, Retention = TimeSpan.FromDays(7) };
        History = new DeliveryHistory(Options);
        Sla = new SlaTracker(Clock, Options, Log);
        Schedules = new Dictionary<string, ScheduleSettings>
        {
            ["urgent"] = new("urgent", "urgent", [TimeSpan.FromMinutes(30)], [], new Expiry.Ttl(TimeSpan.FromHours(1)), TimeSpan.FromMinutes(5)),
            ["default"] = new("default", "default", [TimeSpan.FromHours(1)], [], new Expiry.Ttl(TimeSpan.FromDays(5)), TimeSpan.FromHours(1)),
        };
        Queues = new Dictionary<string, VirtualQueueSettings>
        {
            ["urgent"] = new("urgent", 20, TimeSpan.FromMinutes(1), null),
            ["default"] = new("default", 10, TimeSpan.FromMinutes(1), 5000),
        };
        Sla.SetTargets(SlaTracker.TargetsFrom(Schedules.Values));
        SpoolPath = Path.Combine(dir, "spool");
        Spool = FileSpool.Open(SpoolPath, new FileSpoolOptions { Retention = TimeSpan.FromDays(7) }, Clock);
        ObservedReports = new ObservedDeliveryReports(Reports, Metrics, Sla, History, Clock);
        Scheduler = new QueueScheduler(Spool, Schedules, Queues, new ObservedDeliveryAgent(Agent, Metrics, History, Clock), ObservedReports, Clock);
    }

    public FakeTimeProvider Clock { get; }
    public TestAgent Agent { get; }
    public RecordingReports Reports { get; }
    public ObservedDeliveryReports ObservedReports { get; }
    public RelayMetrics Metrics { get; }
    public AdminOptions Options { get; }
    public DeliveryHistory History { get; }
    public SlaTracker Sla { get; }
    public ListLogger Log { get; } = new();
    public Dictionary<string, ScheduleSettings> Schedules { get; }
    public Dictionary<string, VirtualQueueSettings> Queues { get; }
    public string SpoolPath { get; }
    public FileSpool Spool { get; }
    public QueueScheduler Scheduler { get; }
    public AdminServer Server { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public HttpClient Anonymous { get; private set; } = null!;
    public Uri BaseAddress => Server.BaseAddress;

    /// <summary>What POST /api/reload answers; tests replace it.</summary>
    public Func<CancellationToken, Task<ReloadResult>> Reload { get; set; } = _ => Task.FromResult(ReloadResult.Success("reloaded"));
    public int ReloadCalls;

    public static async Task<AdminHarness> StartAsync()
    {
        var dir = Path.Combine(Path.GetTempPath(), "relay-admin-" + Guid.NewGuid().ToString("n"));
        Directory.CreateDirectory(dir);
        var h = new AdminHarness(dir);
        h.Scheduler.Start();
        await h.Scheduler.Ready.WaitAsync(TimeSpan.FromSeconds(30));
        h.Server = new AdminServer(new AdminSettings(new IPEndPoint(IPAddress.Loopback, 0), Token), new AdminServices
        {
            Spool = h.Spool,
            Scheduler = h.Scheduler,
            Control = h.Scheduler,
            Metrics = h.Metrics,
            Sla = h.Sla,
            History = h.History,
            Reload = ct => { Interlocked.Increment(ref h.ReloadCalls); return h.Reload(ct); },
            Clock = h.Clock,
            SpoolRoot = h.SpoolPath,
        }, h.Options);
        await h.Server.StartAsync(CancellationToken.None);
        h.Http = new HttpClient { BaseAddress = h.Server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        h.Http.DefaultRequestHeaders.Add("X-API-Token", Token);
        h.Anonymous = new HttpClient { BaseAddress = h.Server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        return h;
    }

    /// <summary>Commits one message through IMessageSpool (as the SMTP stage does).</summary>
    public async Task<string> SendAsync(string sender, params string[] recipients)
    {
        await using var m = Spool.Begin();
        await m.WriteAsync(Encoding.ASCII.GetBytes($"From: {sender}\r\nSubject: test {m.Id}\r\n\r\nhello\r\n"));
        await m.CommitAsync(new MessageEnvelope
        {
            Id = m.Id,
            Sender = sender,
            ArrivedAt = Clock.GetUtcNow(),
            Recipients = recipients.Select(r =>
            {
                var schedule = r.EndsWith("@vip.test", StringComparison.Ordinal) ? "urgent" : "default";
                return new RecipientEntry { Address = r, Schedule = schedule, Queue = schedule };
            }).ToList(),
        });
        return m.Id;
    }

    public async Task IdleAsync()
    {
        await Scheduler.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(20));
    }

    public async Task<JsonElement> GetJsonAsync(string path)
    {
        using var response = await Http.GetAsync(path);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"GET {path}: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    public async Task<T> GetAsync<T>(string path) => (await Http.GetFromJsonAsync<T>(path, ApiJson.Options))!;

    public async Task<string> MetricsAsync()
    {
        using var response = await Http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadAsStringAsync();
    }

    public async ValueTask DisposeAsync()
    {
        Agent.ReleaseAll();
        Http?.Dispose();
        Anonymous?.Dispose();
        if (Server is not null) await Server.DisposeAsync();
        await Scheduler.DisposeAsync();
        await Spool.DisposeAsync();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// Answers by local part: <c>hold…</c> waits until released, <c>defer…</c> 450, <c>bounce…</c> 550, anything else 250.
/// <see cref="Override"/> replaces that rule.
/// </summary>
public sealed class TestAgent : IDeliveryAgent
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _holds = new();
    public ConcurrentQueue<DeliveryRequest> Calls { get; } = new();
    public Func<string, RecipientOutcome?>? Override { get; set; }
    public int Holding => _holds.Count(h => !h.Value.Task.IsCompleted);

    public async Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
    {
        Calls.Enqueue(request);
        var outcomes = new List<RecipientOutcome>();
        foreach (var r in request.Recipients)
        {
            if (Override?.Invoke(r.Address) is { } o) { outcomes.Add(o); continue; }
            if (r.Address.StartsWith("hold", StringComparison.Ordinal))
                await _holds.GetOrAdd(r.Address, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task.WaitAsync(cancellationToken);
            outcomes.Add(r.Address.StartsWith("defer", StringComparison.Ordinal)
                ? RecipientOutcome.Temporary(r.Address, 450, "4.2.0", "mailbox busy", "mx.remote.test")
                : r.Address.StartsWith("bounce", StringComparison.Ordinal)
                    ? RecipientOutcome.Permanent(r.Address, 550, "5.1.1", "no such user", "mx.remote.test")
                    : RecipientOutcome.Delivered(r.Address, "mx.remote.test"));
        }
        return outcomes;
    }

    public async Task WaitHeldAsync(string address)
    {
        await Eventually.TrueAsync(() => _holds.TryGetValue(address, out var t) && !t.Task.IsCompleted, $"{address} held by the agent");
    }

    public void Release(string address) =>
        _holds.GetOrAdd(address, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    public void ReleaseAll()
    {
        foreach (var h in _holds.Values) h.TrySetResult();
    }
}

public sealed class RecordingReports : IDeliveryReports
{
    public ConcurrentQueue<DeliveryReport> Final { get; } = new();
    public ConcurrentQueue<DeliveryReport> Delayed { get; } = new();

    public ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        Final.Enqueue(report);
        return ValueTask.CompletedTask;
    }

    public ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        Delayed.Enqueue(report);
        return ValueTask.CompletedTask;
    }
}

public sealed class ListLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, EventId Id, string Text)> Lines { get; } = new();
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Lines.Enqueue((logLevel, eventId, formatter(state, exception)));
}

public static class Eventually
{
    public static async Task TrueAsync(Func<bool> condition, string because, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail("timed out waiting for: " + because);
            await Task.Delay(10);
        }
    }

    public static async Task TrueAsync(Func<Task<bool>> condition, string because, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail("timed out waiting for: " + because);
            await Task.Delay(10);
        }
    }
}

/// <summary>Reads one sample out of Prometheus text.</summary>
public static class Scrape
{
    public static double? Value(string text, string series)
    {
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
                return double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        }
        return null;
    }
}
