// POST /api/reload wired to the scheduler's reload: a virtual queue the new config adds shows in /api/queues and
// /metrics, and a resized queue shows its new threads-per-node (the queue list is not fixed at start).
using System.Net;
using Relay.Admin.Api;
using Relay.Admin.Tests.Harness;
using Relay.Config;

namespace Relay.Admin.Tests;

public sealed class ReloadApiTests : IAsyncLifetime
{
    private AdminHarness _h = null!;

    public async Task InitializeAsync() => _h = await AdminHarness.StartAsync();
    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task Queues_added_or_resized_by_a_reload_show_in_the_api_and_metrics()
    {
        var loaded = ConfigLoader.Parse("""
            [queue.strategy]
            schedule = [ { if = "priority >= 6", then = "'urgent'" }, { else = "'default'" } ]
            [queue.schedule.urgent]
            retry = ["30m"]
            [queue.schedule.default]
            retry = ["1h"]
            [queue.schedule.bulk]
            retry = ["1h"]
            [queue.virtual.urgent]
            threads-per-node = 20
            [queue.virtual.default]
            threads-per-node = 7
            [queue.virtual.bulk]
            threads-per-node = 2
            max-size = 100
            """, "config.toml", Path.GetTempPath());
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        _h.Reload = async _ =>
        {
            var r = await _h.Scheduler.ReconfigureAsync(loaded.Settings!.Queue);
            return ReloadResult.Success("virtual queues added: " + string.Join(", ", r.QueuesAdded));
        };

        using var response = await _h.Http.PostAsync("/api/reload", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var queues = (await _h.GetAsync<QueuesResponse>("/api/queues")).Queues.ToDictionary(q => q.Name);
        Assert.Equal(["bulk", "default", "urgent"], queues.Keys.Order());
        Assert.Equal((2, 100L), (queues["bulk"].ThreadsPerNode, queues["bulk"].MaxSize));
        Assert.Equal(7, queues["default"].ThreadsPerNode);
        var metrics = await _h.MetricsAsync();
        Assert.Equal(2, Scrape.Value(metrics, "relay_queue_threads_per_node{queue=\"bulk\"}"));
        Assert.Equal(7, Scrape.Value(metrics, "relay_queue_threads_per_node{queue=\"default\"}"));
    }
}
