// Reload ordering and reload-vs-shutdown (review findings 11a, 11b).
namespace Relay.EndToEnd.Tests;

public sealed partial class ReloadTests
{
    private static Relay.Config.Strategy.RecipientContext Smtp => new() { Recipient = "x@y.test", Source = "smtp" };

    // 11a: the strategy used to be swapped before the scheduler took the new [queue]; when that failed, new mail was
    // classified with schedules the scheduler never learned.
    [Fact]
    public async Task A_reload_the_scheduler_cannot_take_keeps_the_strategy_in_force()
    {
        var host = await StartAsync(Config());
        Assert.True(await host.Scheduler.DrainAsync(CancellationToken.None));   // the scheduler now refuses reconfiguration

        _world.WriteConfig(Config().Replace("{ if = \"priority >= 6\", then = \"'urgent'\" }", "{ if = \"source == 'smtp'\", then = \"'urgent'\" }"));
        var result = await host.ReloadAsync(CancellationToken.None);

        Assert.False(result.Ok);
        Assert.Contains("stopping", Assert.Single(result.Errors).Message);
        Assert.Equal("default", host.Classify(Smtp).Schedule.Name);
        var id = await SendAsync(Port(host, "smtp"), "a@remote.test");
        Assert.Equal("default", ScheduleOf(host, id));
    }

    // 11b: a reload after (or during) shutdown used to run against stopped stages.
    [Fact]
    public async Task A_reload_after_stop_is_refused_and_starts_no_listener()
    {
        var host = await StartAsync(Config());
        _world.WriteConfig(Config().Replace("{ if = \"priority >= 6\", then = \"'urgent'\" }", "{ if = \"source == 'smtp'\", then = \"'urgent'\" }"));
        var reload = host.ReloadAsync(CancellationToken.None);
        await host.StopAsync(CancellationToken.None);   // waits for a reload in progress, then none starts
        Assert.True((await reload).Ok);

        var result = await host.ReloadAsync(CancellationToken.None);
        var error = Assert.Single(result.Errors);
        Assert.Equal("the relay is stopping", error.Message);
        Assert.Empty(host.Inbound.EndPoints);
    }
}
