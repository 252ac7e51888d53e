// SpoolBench: durable enqueue rate (1, 8, 32 writers, 4 KiB messages), resident memory and restart-to-ready
// time with 1,000,000 queued recipients. See README.md for the figures and the command.
using System.Diagnostics;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

var mode = args.Length > 0 ? args[0] : "all";
var root = args.Length > 1 ? args[1] : Path.Combine(Path.GetTempPath(), "relay-spoolbench");

switch (mode)
{
    case "enqueue":
        foreach (var writers in new[] { 1, 8, 32 }) await Enqueue(Path.Combine(root, $"enqueue-{writers}"), writers, TimeSpan.FromSeconds(10));
        break;
    case "fill":
        await Fill(root, int.Parse(args[2]), int.Parse(args[3]));
        break;
    case "ready":
        await Ready(root);
        break;
    case "all":
        if (Directory.Exists(root)) Directory.Delete(root, true);
        foreach (var writers in new[] { 1, 8, 32 }) await Enqueue(Path.Combine(root, $"enqueue-{writers}"), writers, TimeSpan.FromSeconds(10));
        foreach (var (messages, perMessage) in new[] { (100_000, 10), (1_000_000, 1) })
        {
            var dir = Path.Combine(root, $"queue-{messages}x{perMessage}");
            await Fill(dir, messages, perMessage);
            for (var run = 1; run <= 2; run++) Child("ready", dir);   // a fresh process = a restart
        }
        Directory.Delete(root, true);
        break;
}
return 0;

static void Child(string mode, string dir)
{
    var self = Environment.ProcessPath!.EndsWith("dotnet") ? ["exec", typeof(Program).Assembly.Location] : Array.Empty<string>();
    var psi = new ProcessStartInfo(Environment.ProcessPath!, [.. self, mode, dir]) { UseShellExecute = false };
    using var p = Process.Start(psi)!;
    p.WaitForExit();
}

static MessageEnvelope Envelope(string id, int recipients, int n) => new()
{
    Id = id,
    Sender = "bench@example.test",
    ArrivedAt = DateTimeOffset.UtcNow,
    Recipients = Enumerable.Range(0, recipients)
        .Select(r => new RecipientEntry { Address = $"user{n}.{r}@d{(n * 31 + r) % 5000}.example", Schedule = "default", Queue = "default" })
        .ToList(),
};

static async Task Enqueue(string dir, int writers, TimeSpan duration)
{
    await using var spool = FileSpool.Open(dir);
    var body = new byte[4096];
    Random.Shared.NextBytes(body);
    var count = 0L;
    var latencies = new List<double>[writers];
    var stop = Stopwatch.StartNew();
    var syncs0 = spool.JournalSyncs;
    await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
    {
        var mine = latencies[w] = [];
        for (var n = 0; stop.Elapsed < duration; n++)
        {
            var t = Stopwatch.GetTimestamp();
            await using var m = spool.Begin();
            await m.WriteAsync(body);
            await m.CommitAsync(Envelope(m.Id, 1, n));
            mine.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
            Interlocked.Increment(ref count);
        }
    })));
    var elapsed = stop.Elapsed.TotalSeconds;
    var all = latencies.SelectMany(l => l).Order().ToArray();
    var syncs = spool.JournalSyncs - syncs0;
    Console.WriteLine($"enqueue writers={writers,2}: {count / elapsed,8:F0} msg/s  ({count} x 4 KiB in {elapsed:F1} s; " +
                      $"commit latency p50 {all[all.Length / 2]:F2} ms, p99 {all[(int)(all.Length * 0.99)]:F2} ms; " +
                      $"{(double)count / syncs:F1} commits per journal fsync)");
}

static async Task Fill(string dir, int messages, int perMessage)
{
    var stop = Stopwatch.StartNew();
    await using (var spool = FileSpool.Open(dir))
    {
        var body = new byte[512];
        Random.Shared.NextBytes(body);
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, 64).Select(_ => Task.Run(async () =>
        {
            int n;
            while ((n = Interlocked.Increment(ref next)) < messages)
            {
                await using var m = spool.Begin();
                await m.WriteAsync(body);
                await m.CommitAsync(Envelope(m.Id, perMessage, n));
            }
        })));
    }
    Console.WriteLine($"fill: {messages} messages x {perMessage} recipients = {(long)messages * perMessage} queued recipients " +
                      $"in {stop.Elapsed.TotalSeconds:F0} s; journal {DirSize(Path.Combine(dir, "journal")) / 1048576.0:F0} MiB");
}

static async Task Ready(string dir)
{
    var stop = Stopwatch.StartNew();
    var spool = FileSpool.Open(dir);
    var opened = stop.Elapsed.TotalSeconds;
    // A delivery agent that never finishes: everything stays queued, as in an outage of the next hop.
    var agent = new StuckAgent();
    var scheduler = new QueueScheduler(spool,
        new Dictionary<string, ScheduleSettings> { ["default"] = new("default", "default", [TimeSpan.FromMinutes(5)], [TimeSpan.FromDays(1)], new Expiry.Ttl(TimeSpan.FromDays(5)), null) },
        new Dictionary<string, VirtualQueueSettings> { ["default"] = new("default", 100, TimeSpan.FromMinutes(1), null) },
        agent, new NoDeliveryReports(), TimeProvider.System);
    scheduler.Start();
    await scheduler.Ready;
    var ready = stop.Elapsed.TotalSeconds;
    var rss = Process.GetCurrentProcess().WorkingSet64;
    GC.Collect(2, GCCollectionMode.Aggressive, true, true);
    var self = Process.GetCurrentProcess();
    self.Refresh();
    Console.WriteLine($"restart: spool open {opened:F1} s, scheduler ready {ready:F1} s; {spool.CountPending("default")} recipients queued, " +
                      $"{scheduler.GetQueueStats()[0].InFlight} in flight; RSS {rss / 1048576.0:F0} MiB " +
                      $"(after full GC {self.WorkingSet64 / 1048576.0:F0} MiB, managed heap {GC.GetTotalMemory(false) / 1048576.0:F0} MiB, peak {self.PeakWorkingSet64 / 1048576.0:F0} MiB)");
    GC.KeepAlive(scheduler);
    Environment.Exit(0);
}

static long DirSize(string dir) => new DirectoryInfo(dir).EnumerateFiles().Sum(f => f.Length);

sealed class StuckAgent : IDeliveryAgent
{
    public async Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
    {
        await Task.Delay(Timeout.Infinite, cancellationToken);
        return [];
    }
}
