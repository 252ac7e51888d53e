// ApiBench: HTTP submissions/s into a whole relay (RelayHost in this process: durable spool, strategy,
// scheduler, [delivery] hold = true so nothing leaves). S concurrent clients each POST a 4 KiB text
// message to one recipient over keep-alive connections until N are accepted (every one answered 202,
// i.e. fsynced). Usage: dotnet run -c Release --project bench/api -- [N=5000] [S=20] [keys]
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Relay;
using Relay.Config;

var total = args.Length > 0 ? int.Parse(args[0]) : 5000;
var clients = args.Length > 1 ? int.Parse(args[1]) : 20;
var withKeys = args.Contains("keys");
// "invalid": every request lacks a recipient and is refused 400 before MIME or spool: the HTTP + JSON floor.
var invalid = args.Contains("invalid");
var dir = Directory.CreateTempSubdirectory("relay-api-bench-");
var toml = $$"""
    [server]
    hostname = "bench.relay.test"
    [spool]
    path = "{{dir.FullName}}/spool"
    [delivery]
    hold = true
    [api]
    bind = "127.0.0.1:0"
    [api.client.bench]
    token = "bench-token"
    [queue.strategy]
    schedule = [ { if = "priority >= 6", then = "'urgent'" }, { else = "'default'" } ]
    [queue.schedule.urgent]
    retry = ["1h"]
    [queue.schedule.default]
    retry = ["1h"]
    [queue.virtual.urgent]
    threads-per-node = 20
    [queue.virtual.default]
    threads-per-node = 20
    """;
var loaded = ConfigLoader.Parse(toml, "bench.toml", dir.FullName);
if (!loaded.Ok) { foreach (var e in loaded.Errors) Console.Error.WriteLine(e); return 1; }
var settings = loaded.Settings!;
await using var host = await RelayHost.StartAsync(settings, StageFactory.CreateDeliveryAgent(settings, NullLoggerFactory.Instance),
    StageFactory.CreateReports(settings, NullLoggerFactory.Instance), NullLoggerFactory.Instance);

var text = string.Concat(Enumerable.Repeat("The quick brown fox jumps over the lazy dog. 0123456789\r\n", 4096 / 57));
using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = clients, PooledConnectionLifetime = Timeout.InfiniteTimeSpan })
{
    BaseAddress = host.Api!.BaseAddress,
};
http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "bench-token");

async Task<int> RunAsync(int count, string tag)
{
    var next = -1;
    var failed = 0;
    await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
    {
        int n;
        while ((n = Interlocked.Increment(ref next)) < count)
        {
            var body = invalid
                ? JsonSerializer.Serialize(new { from = "app@bench.test", subject = $"bench {tag} {n}", text })
                : JsonSerializer.Serialize(new { from = "app@bench.test", to = $"rcpt{n}@remote.test", subject = $"bench {tag} {n}", text });
            using var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/messages") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            if (withKeys) request.Headers.Add("Idempotency-Key", $"{tag}-{n}");
            using var response = await http.SendAsync(request);
            if (response.StatusCode != (invalid ? HttpStatusCode.BadRequest : HttpStatusCode.Accepted)) Interlocked.Increment(ref failed);
        }
    }));
    return failed;
}

await RunAsync(Math.Min(500, total / 10), "warmup");
var process = Process.GetCurrentProcess();
var cpuBefore = process.TotalProcessorTime;
var syncsBefore = host.Spool.JournalSyncs;
var watch = Stopwatch.StartNew();
var failures = await RunAsync(total, "run");
watch.Stop();
process.Refresh();
var cpu = process.TotalProcessorTime - cpuBefore;
var syncs = host.Spool.JournalSyncs - syncsBefore;
Console.WriteLine($"clients={clients} messages={total} keys={withKeys} invalid={invalid} failed={failures}");
Console.WriteLine($"elapsed={watch.Elapsed.TotalSeconds:F2}s rate={total / watch.Elapsed.TotalSeconds:F0} msg/s " +
                  $"cpu={cpu.TotalMilliseconds / total:F2} ms/msg (server and load generator, one process) " +
                  $"journal-fsyncs={syncs} ({(double)total / Math.Max(1, syncs):F1} msg/fsync)");
await host.StopAsync();
try { dir.Delete(true); } catch (IOException) { }
return failures == 0 ? 0 : 1;
