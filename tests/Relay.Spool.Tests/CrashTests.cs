// Crash test: a child process accepts (commits) and delivers mail and is killed with SIGKILL mid-stream.
// After restart on the same spool every acknowledged message must be delivered, with duplicates only for
// deliveries that were in flight at the kill.
using System.Collections.Concurrent;
using System.Diagnostics;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;
using Xunit.Abstractions;

namespace Relay.Spool.Tests;

public static class CrashChild
{
    public const int Threads = 4;

    public static IReadOnlyDictionary<string, ScheduleSettings> Schedules =>
        new Dictionary<string, ScheduleSettings> { ["default"] = Settings.Schedule("default", "q", [TimeSpan.FromSeconds(1)]) };

    public static IReadOnlyDictionary<string, VirtualQueueSettings> Queues =>
        new Dictionary<string, VirtualQueueSettings> { ["q"] = Settings.Queue("q", Threads) };

    /// <summary>Commits with 8 concurrent writers and delivers with 4 threads until killed. Prints C id / S id.</summary>
    public static async Task<int> RunAsync(string dir)
    {
        var spool = FileSpool.Open(Path.Combine(dir, "spool"));
        var agent = new PrintingAgent();
        var scheduler = new QueueScheduler(spool, Schedules, Queues, agent, new NoDeliveryReports(), TimeProvider.System);
        scheduler.Start();
        var writers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            for (var i = 0; ; i++)
            {
                var id = await Messages.CommitAsync(spool, DateTimeOffset.UtcNow, 0, ($"w{w}n{i}@remote.test", "default", "q"));
                Console.Out.WriteLine("C " + id);   // printed only after the commit returned (= the 250)
            }
        }));
        await Task.WhenAll(writers);
        return 0;
    }

    private sealed class PrintingAgent : IDeliveryAgent
    {
        public async Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
        {
            await Task.Delay(1, cancellationToken);
            Console.Out.WriteLine("S " + request.MessageId);   // the remote accepted it
            return request.Recipients.Select(r => RecipientOutcome.Delivered(r.Address)).ToList();
        }
    }
}

public sealed class CrashTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Sigkill_while_accepting_and_delivering_loses_nothing_and_repeats_only_in_flight_deliveries()
    {
        using var dir = new TempDir();
        var committed = new ConcurrentDictionary<string, bool>();
        var sentByChild = new ConcurrentDictionary<string, int>();
        var dll = Path.Combine(AppContext.BaseDirectory, "Relay.Spool.Tests.dll");
        using var child = new Process
        {
            StartInfo = new ProcessStartInfo("dotnet", [dll, "crash-child", dir.Path])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            },
        };
        child.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not { Length: > 2 } line) return;
            if (line[0] == 'C') committed[line[2..]] = true;
            else if (line[0] == 'S') sentByChild.AddOrUpdate(line[2..], 1, (_, n) => n + 1);
        };
        child.Start();
        child.BeginOutputReadLine();
        child.BeginErrorReadLine();
        await Eventually.TrueAsync(() => committed.Count >= 600 && sentByChild.Count >= 100 || child.HasExited,
                                   TimeSpan.FromSeconds(40), "child commits and delivers");
        Assert.False(child.HasExited, "child died on its own");
        child.Kill();   // SIGKILL on Unix
        child.WaitForExit();

        // Restart on the same spool and deliver what is left.
        await using var spool = FileSpool.Open(Path.Combine(dir.Path, "spool"));
        var sentAfter = new ConcurrentDictionary<string, int>();
        var corrupt = 0;
        var agent = new ScriptedAgent
        {
            Hold = async (request, ct) =>
            {
                await using var body = await request.OpenContent(ct);
                using var copy = new MemoryStream();
                await body.CopyToAsync(copy, ct);
                if (!copy.ToArray().AsSpan().SequenceEqual(Messages.Body(request.MessageId))) Interlocked.Increment(ref corrupt);
                sentAfter.AddOrUpdate(request.MessageId, 1, (_, n) => n + 1);
            },
        };
        await using var scheduler = new QueueScheduler(spool, CrashChild.Schedules, CrashChild.Queues, agent, new NoDeliveryReports(), TimeProvider.System);
        scheduler.Start();
        await Eventually.TrueAsync(() => spool.CountPending("q") == 0, TimeSpan.FromSeconds(30), "everything delivered after restart");

        var lost = committed.Keys.Count(id => !sentByChild.ContainsKey(id) && !sentAfter.ContainsKey(id));
        var duplicated = sentAfter.Keys.Count(sentByChild.ContainsKey);
        output.WriteLine($"acknowledged {committed.Count}, delivered before kill {sentByChild.Count}, after restart {sentAfter.Count}; " +
                         $"lost {lost}, duplicated {duplicated}, corrupt {corrupt}, quarantined {Directory.EnumerateFiles(Path.Combine(dir.Path, "spool", "quarantine")).Count()}");
        Assert.Equal(0, lost);
        Assert.Equal(0, corrupt);
        Assert.True(duplicated <= CrashChild.Threads, $"{duplicated} duplicates, at most {CrashChild.Threads} deliveries can be in flight");
        Assert.All(sentAfter.Values, n => Assert.Equal(1, n));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(dir.Path, "spool", "quarantine")));
    }
}
