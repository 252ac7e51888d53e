// Shared harness: temp folders, a real FileSpool + QueueScheduler with the eventing decorators around a scripted
// delivery agent (the collaborator on the other side of the boundary), and a real webhook receiver on loopback.
using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Events.Tests;

public sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "relay-events-" + Guid.NewGuid().ToString("n")));
    public string Path { get; }
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

public static class Eventually
{
    public static async Task TrueAsync(Func<bool> condition, TimeSpan? timeout = null, string? because = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail("condition not met in time" + (because is null ? "" : ": " + because));
            await Task.Delay(5);
        }
    }
}

public static class Envelopes
{
    public static readonly DateTimeOffset Epoch = new(2026, 11, 23, 9, 0, 0, TimeSpan.Zero);

    public static MessageEnvelope Api(string id, string client = "shop", string sender = "app@shop.test", DateTimeOffset? at = null,
                                      params string[] recipients) => new()
    {
        Id = id,
        Sender = sender,
        ArrivedAt = at ?? Epoch,
        Priority = 3,
        Source = "api",
        AuthenticatedAs = client,
        Recipients = (recipients.Length == 0 ? ["a@x.test"] : recipients)
            .Select(r => new RecipientEntry { Address = r, Schedule = "default", Queue = "default" }).ToList(),
    };
}

/// <summary>A delivery agent whose answers the test scripts per recipient and attempt.</summary>
public sealed class ScriptedAgent : IDeliveryAgent
{
    public Func<DeliveryRecipient, RecipientOutcome> Answer { get; set; } = r => RecipientOutcome.Delivered(r.Address, "mx.x.test");
    public Func<DeliveryRequest, Exception?>? Throw { get; set; }
    public int Calls;

    public Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref Calls);
        if (Throw?.Invoke(request) is { } e) throw e;
        return Task.FromResult<IReadOnlyList<RecipientOutcome>>(request.Recipients.Select(Answer).ToList());
    }
}

/// <summary>The DSN stage's place: records what reached it (so tests can tell the decorator passed it on).</summary>
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

/// <summary>FileSpool + QueueScheduler on a fake clock, with the event log and both decorators wired as the host does.</summary>
public sealed class Harness : IAsyncDisposable
{
    private readonly TempDir _dir = new();

    public Harness(ScheduleSettings schedule, Func<Exception?>? logFault = null)
    {
        Clock = new FakeTimeProvider(Envelopes.Epoch);
        Spool = FileSpool.Open(Path.Combine(_dir.Path, "spool"), new FileSpoolOptions(), Clock);
        EventsDirectory = Path.Combine(_dir.Path, "spool", "events");
        Log = DeliveryEventLog.Open(EventsDirectory, new DeliveryEventLogOptions { PurgeInterval = null, Fault = logFault }, Clock, Spool);
        Agent = new ScriptedAgent();
        Reports = new RecordingReports();
        Scheduler = new QueueScheduler(Spool,
            new Dictionary<string, ScheduleSettings> { [schedule.Name] = schedule },
            new Dictionary<string, VirtualQueueSettings> { [schedule.QueueName] = new(schedule.QueueName, 10, TimeSpan.FromMinutes(1), null) },
            new EventingDeliveryAgent(Agent, Log, Clock),
            new EventingDeliveryReports(Reports, Log, Clock),
            Clock)
        {
            Operations = Log,   // as the host wires it: requeue and cancel reach the log
        };
    }

    public static ScheduleSettings Schedule(TimeSpan[] retry, TimeSpan[]? notify = null, Expiry? expiry = null) =>
        new("default", "default", retry, notify ?? [], expiry ?? new Expiry.Ttl(TimeSpan.FromDays(5)), null);

    public FakeTimeProvider Clock { get; }
    public string EventsDirectory { get; }
    public FileSpool Spool { get; }
    public DeliveryEventLog Log { get; }
    public ScriptedAgent Agent { get; }
    public RecordingReports Reports { get; }
    public QueueScheduler Scheduler { get; }

    /// <summary>Commits a message to the spool as the submission API does, then records its accepted event.</summary>
    public async Task<string> SubmitAsync(string source = "api", string sender = "app@shop.test", DsnNotify notify = DsnNotify.Default,
                                          params string[] recipients)
    {
        await using var m = Spool.Begin();
        await m.WriteAsync(Encoding.ASCII.GetBytes($"Subject: {m.Id}\r\n\r\nhello\r\n"));
        var envelope = new MessageEnvelope
        {
            Id = m.Id,
            Sender = sender,
            ArrivedAt = Clock.GetUtcNow(),
            Priority = 3,
            Source = source,
            AuthenticatedAs = source == "api" ? "shop" : null,
            Recipients = recipients.Select(r => new RecipientEntry { Address = r, Schedule = "default", Queue = "default", Notify = notify }).ToList(),
        };
        await m.CommitAsync(envelope);
        if (source == "api") await Log.MessageAcceptedAsync(envelope, CancellationToken.None);
        return m.Id;
    }

    public async Task StartAsync()
    {
        Scheduler.Start();
        await Scheduler.Ready.WaitAsync(TimeSpan.FromSeconds(30));
        await IdleAsync();
    }

    public Task IdleAsync() => Scheduler.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(30));

    /// <summary>Moves the fake clock in steps so every timer fires at its own time, letting the scheduler settle.</summary>
    public async Task AdvanceAsync(TimeSpan total, TimeSpan step)
    {
        for (var done = TimeSpan.Zero; done < total; done += step)
        {
            Clock.Advance(step < total - done ? step : total - done);
            await IdleAsync();
        }
    }

    public async Task<MessageStatusView> StatusAsync(string id) =>
        await Log.FindAsync(id, CancellationToken.None) ?? throw new Xunit.Sdk.XunitException($"no status for {id}");

    public async ValueTask DisposeAsync()
    {
        await Scheduler.DisposeAsync();
        await Log.DisposeAsync();
        await Spool.DisposeAsync();
        _dir.Dispose();
    }
}

/// <summary>One request the webhook receiver got.</summary>
public sealed record WebhookCall(long EventId, string Signature, byte[] Body, int Answered)
{
    public DeliveryEvent Event => System.Text.Json.JsonSerializer.Deserialize<DeliveryEvent>(Body, new System.Text.Json.JsonSerializerOptions(System.Text.Json.JsonSerializerDefaults.Web))!;

    public bool SignatureValid(string secret) =>
        Signature == "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Body));
}

/// <summary>A real HTTP receiver (Kestrel) on 127.0.0.1; the test decides each answer.</summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;

    private WebhookReceiver(WebApplication app) => _app = app;

    public ConcurrentQueue<WebhookCall> Calls { get; } = new();
    public Func<long, int> Answer { get; set; } = _ => 200;
    /// <summary>When set, awaited before answering (given the request's abort token): a slow or hung receiver.</summary>
    public Func<long, CancellationToken, Task>? Hold { get; set; }
    public int Port { get; private set; }
    public Uri Url => new($"http://127.0.0.1:{Port}/hook");

    /// <summary>Calls answered 2xx, in arrival order.</summary>
    public List<WebhookCall> Accepted => Calls.Where(c => c.Answered is >= 200 and < 300).ToList();

    public static async Task<WebhookReceiver> StartAsync(int port = 0)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, port));
        var app = builder.Build();
        var receiver = new WebhookReceiver(app);
        app.MapPost("/hook", async (HttpContext ctx) =>
        {
            using var ms = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(ms);
            var id = long.Parse(ctx.Request.Headers["X-Relay-Event-Id"].ToString());
            if (receiver.Hold is { } hold)
            {
                try { await hold(id, ctx.RequestAborted); }
                catch (OperationCanceledException)
                {
                    receiver.Calls.Enqueue(new WebhookCall(id, "", ms.ToArray(), 0));   // the sender gave up on it
                    return;
                }
            }
            var status = receiver.Answer(id);
            receiver.Calls.Enqueue(new WebhookCall(id, ctx.Request.Headers["X-Relay-Signature"].ToString(), ms.ToArray(), status));
            ctx.Response.StatusCode = status;
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        receiver.Port = new Uri(address).Port;
        return receiver;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
