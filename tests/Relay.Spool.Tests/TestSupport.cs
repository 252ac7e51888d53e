// Shared test harness: temp spool folders, settings builders, a scriptable delivery agent and DSN sink,
// and a fake clock. Nothing here sleeps: time moves only when a test advances it.
using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Spool.Tests;

public sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "relay-spool-" + Guid.NewGuid().ToString("n")));
    public string Path { get; }
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

public static class Settings
{
    public static ScheduleSettings Schedule(string name, string queue, TimeSpan[] retry, TimeSpan[]? notify = null, Expiry? expiry = null) =>
        new(name, queue, retry, notify ?? [], expiry ?? new Expiry.Ttl(TimeSpan.FromDays(5)), null);

    public static VirtualQueueSettings Queue(string name, int threads, TimeSpan? aging = null, long? maxSize = null) =>
        new(name, threads, aging ?? TimeSpan.FromMinutes(1), maxSize);

    public static TimeSpan S(double seconds) => TimeSpan.FromSeconds(seconds);
    public static TimeSpan M(double minutes) => TimeSpan.FromMinutes(minutes);
}

public static class Messages
{
    public static byte[] Body(string id, int size = 200)
    {
        var head = $"Subject: {id}\r\n\r\n";
        var sb = new StringBuilder(head);
        while (sb.Length < size - 2) sb.Append((char)('a' + sb.Length % 26));
        sb.Append("\r\n");
        return Encoding.ASCII.GetBytes(sb.ToString());
    }

    /// <summary>Commits one message; each recipient is (address, schedule, queue).</summary>
    public static async Task<string> CommitAsync(IMessageSpool spool, DateTimeOffset arrivedAt, int priority,
                                                 params (string Address, string Schedule, string Queue)[] recipients)
    {
        await using var m = spool.Begin();
        await m.WriteAsync(Body(m.Id));
        await m.CommitAsync(new MessageEnvelope
        {
            Id = m.Id,
            Sender = "sender@example.test",
            ArrivedAt = arrivedAt,
            Priority = priority,
            Recipients = recipients.Select(r => new RecipientEntry { Address = r.Address, Schedule = r.Schedule, Queue = r.Queue }).ToList(),
        });
        return m.Id;
    }
}

/// <summary>A delivery agent whose answers and pace the test controls.</summary>
public sealed class ScriptedAgent : IDeliveryAgent
{
    private int _current;
    private int _max;

    public Func<DeliveryRequest, DeliveryRecipient, RecipientOutcome> Answer { get; set; } = (_, r) => RecipientOutcome.Delivered(r.Address, "mx.test");
    /// <summary>When set, each call waits for it (tests release deliveries one by one).</summary>
    public Func<DeliveryRequest, CancellationToken, Task>? Hold { get; set; }
    public Func<DeliveryRequest, Exception?>? Throw { get; set; }
    public TimeProvider? Clock { get; set; }

    public ConcurrentQueue<(DateTimeOffset At, DeliveryRequest Request)> Calls { get; } = new();
    public int Completed;
    public int MaxConcurrent => Volatile.Read(ref _max);
    public int Current => Volatile.Read(ref _current);

    public IEnumerable<string> Delivered(string address) =>
        Calls.Where(c => c.Request.Recipients.Any(r => r.Address == address)).Select(c => c.Request.MessageId);

    public async Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
    {
        var now = Interlocked.Increment(ref _current);
        int seen;
        while (now > (seen = Volatile.Read(ref _max)) && Interlocked.CompareExchange(ref _max, now, seen) != seen) { }
        Calls.Enqueue((Clock?.GetUtcNow() ?? default, request));
        try
        {
            if (Hold is not null) await Hold(request, cancellationToken);
            if (Throw?.Invoke(request) is { } e) throw e;
            return request.Recipients.Select(r => Answer(request, r)).ToList();
        }
        finally
        {
            Interlocked.Decrement(ref _current);
            Interlocked.Increment(ref Completed);
        }
    }
}

public sealed class RecordingReports : IDeliveryReports
{
    public ConcurrentQueue<DeliveryReport> Final { get; } = new();
    public ConcurrentQueue<(DateTimeOffset At, DeliveryReport Report)> Delayed { get; } = new();
    public TimeProvider? Clock { get; set; }

    /// <summary>When it returns an exception, the final report is refused with it (not recorded).</summary>
    public Func<DeliveryReport, Exception?>? RefuseFinal { get; set; }

    public ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        if (RefuseFinal?.Invoke(report) is { } e) throw e;
        Final.Enqueue(report);
        return ValueTask.CompletedTask;
    }

    public ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        Delayed.Enqueue((Clock?.GetUtcNow() ?? default, report));
        return ValueTask.CompletedTask;
    }
}

/// <summary>A spool and a scheduler on a fake clock, restartable on the same folder.</summary>
public sealed class Harness : IAsyncDisposable
{
    public static readonly DateTimeOffset Epoch = new(2026, 11, 23, 9, 0, 0, TimeSpan.Zero);

    private readonly TempDir? _ownDir;

    public Harness(IReadOnlyList<ScheduleSettings> schedules, IReadOnlyList<VirtualQueueSettings> queues,
                   string? dir = null, FakeTimeProvider? clock = null, ScriptedAgent? agent = null, RecordingReports? reports = null)
    {
        if (dir is null) { _ownDir = new TempDir(); dir = _ownDir.Path; }
        Dir = dir;
        Clock = clock ?? new FakeTimeProvider(Epoch);
        Agent = agent ?? new ScriptedAgent();
        Agent.Clock ??= Clock;
        Reports = reports ?? new RecordingReports();
        Reports.Clock ??= Clock;
        Schedules = schedules;
        Queues = queues;
        Spool = FileSpool.Open(Path.Combine(dir, "spool"), new FileSpoolOptions { Retention = TimeSpan.FromDays(7) }, Clock);
        Scheduler = new QueueScheduler(Spool, schedules.ToDictionary(s => s.Name), queues.ToDictionary(q => q.Name), Agent, Reports, Clock);
    }

    public string Dir { get; }
    public FakeTimeProvider Clock { get; }
    public ScriptedAgent Agent { get; }
    public RecordingReports Reports { get; }
    public IReadOnlyList<ScheduleSettings> Schedules { get; }
    public IReadOnlyList<VirtualQueueSettings> Queues { get; }
    public FileSpool Spool { get; }
    public QueueScheduler Scheduler { get; }

    public Task<string> CommitAsync(int priority, params (string, string, string)[] recipients) =>
        Messages.CommitAsync(Spool, Clock.GetUtcNow(), priority, recipients);

    public async Task StartAsync()
    {
        Scheduler.Start();
        await Scheduler.Ready.WaitAsync(TimeSpan.FromSeconds(30));
        await IdleAsync();
    }

    public async Task IdleAsync()
    {
        try { await Scheduler.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(30)); }
        catch (TimeoutException) { Assert.Fail("scheduler never became idle: " + Scheduler.DebugState); }
    }

    /// <summary>Moves the fake clock in steps (so every timer fires at its own time) and lets the scheduler settle.</summary>
    public async Task AdvanceAsync(TimeSpan total, TimeSpan? step = null)
    {
        var s = step ?? TimeSpan.FromSeconds(1);
        for (var done = TimeSpan.Zero; done < total; done += s)
        {
            Clock.Advance(s < total - done ? s : total - done);
            await IdleAsync();
        }
    }

    /// <summary>Stops this node and opens a new one on the same spool and clock (a clean restart).</summary>
    public async Task<Harness> RestartAsync(ScriptedAgent? agent = null, RecordingReports? reports = null)
    {
        await Scheduler.DisposeAsync();
        await Spool.DisposeAsync();
        return new Harness(Schedules, Queues, Dir, Clock, agent, reports);
    }

    public async ValueTask DisposeAsync()
    {
        await Scheduler.DisposeAsync();
        await Spool.DisposeAsync();
        _ownDir?.Dispose();
    }
}

public static class Eventually
{
    public static async Task TrueAsync(Func<bool> condition, TimeSpan? timeout = null, string? because = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail("condition not met in time" + (because is null ? "" : ": " + because));
            await Task.Delay(5);
        }
    }
}

/// <summary>Damages what a disk can: the stored bytes of a message kept inline in the journal.</summary>
public static class SpoolDamage
{
    /// <summary>Flips one byte of <paramref name="id"/>'s body inside its journal Body record (its CRC no longer matches).</summary>
    public static void CorruptInlineBody(string spoolRoot, string id)
    {
        var needle = System.Text.Encoding.ASCII.GetBytes(id);
        foreach (var segment in Directory.EnumerateFiles(Path.Combine(spoolRoot, "journal"), "*.log"))
        {
            var bytes = File.ReadAllBytes(segment);
            var at = bytes.AsSpan().IndexOf(needle);
            if (at < 0) continue;
            using var fs = new FileStream(segment, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
            fs.Position = at + needle.Length + 5;   // inside the body that follows the id
            fs.WriteByte((byte)(bytes[at + needle.Length + 5] ^ 0xFF));
            return;
        }
        throw new InvalidOperationException($"{id}: no journal record holds it");
    }
}

