// [delivery] route rules end to end: the config's NCalc rules pick a smart host or MX per delivery request
// (domain + envelope), against the in-test DNS responder and real SMTP servers on loopback.
using Relay.Config;
using Relay.Scheduler;

namespace Relay.Delivery.Tests;

public sealed class RouteRuleTests : IAsyncLifetime
{
    private readonly World _world = new();
    private TestSmtpServer _remoteMx = null!, _providerMx = null!, _smartHost = null!;

    public Task InitializeAsync()
    {
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        _world.Dns.Mx("provider.test", (10, "mx.provider.test")).Address("mx.provider.test", "127.0.0.3");
        _remoteMx = _world.Server("127.0.0.2");
        _providerMx = _world.Server("127.0.0.3");
        _smartHost = _world.Server("127.0.0.6");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _world.DisposeAsync();

    private DeliveryAgent Agent()
    {
        var toml = $$"""
            [delivery]
            route = [ { if = "rcpt_domain == 'provider.test' || sender_domain == 'app.test'", then = "'provider'" },
                      { else = "'mx'" } ]

            [delivery.smart-host.provider]
            host = "127.0.0.6"
            port = {{_world.Port}}
            tls = "none"

            [queue.strategy]
            schedule = [ { else = "'default'" } ]
            [queue.schedule.default]
            [queue.virtual.default]
            """;
        var loaded = ConfigLoader.Parse(toml, "test.toml");
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        var delivery = loaded.Settings!.Delivery;
        var smart = delivery.SmartHosts["provider"];
        return _world.Agent(new DeliveryOptions
        {
            CommandTimeout = TimeSpan.FromSeconds(10),
            SmartHosts = new Dictionary<string, SmartHost> { ["provider"] = new(smart.Host, smart.Port, SmartHostTls.None) },
            RouteSelector = DeliveryOptions.RouteSelectorFor(delivery.Route!, _world.Log),
        });
    }

    [Fact]
    public async Task A_routed_domain_goes_to_the_smart_host_and_another_to_its_mx()
    {
        var agent = Agent();

        var routed = await agent.DeliverAsync(_world.Request("provider.test", World.Message(), "a@provider.test", "b@provider.test"), default);
        var direct = await agent.DeliverAsync(_world.Request("remote.test", World.Message(), "c@remote.test"), default);

        Assert.All(routed.Concat(direct), o => Assert.Equal(OutcomeKind.Delivered, o.Kind));
        var viaSmartHost = Assert.Single(_smartHost.Messages);
        Assert.Collection(viaSmartHost.RcptTo, r => Assert.Contains("<a@provider.test>", r), r => Assert.Contains("<b@provider.test>", r));
        Assert.Empty(_providerMx.Messages);
        Assert.Equal(0, _world.Dns.Queries("provider.test", TestDns.MX));
        Assert.Contains("<c@remote.test>", Assert.Single(Assert.Single(_remoteMx.Messages).RcptTo));
    }

    [Fact]
    public async Task The_envelope_sender_can_route_a_domain_that_otherwise_goes_to_mx()
    {
        var agent = Agent();

        var outcome = Assert.Single(await agent.DeliverAsync(
            _world.Request("remote.test", World.Message(), e => e with { Sender = "noreply@App.test" },
                new Relay.Spool.RecipientEntry { Address = "c@remote.test", Schedule = "default", Queue = "default" }), default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Single(_smartHost.Messages);
        Assert.Empty(_remoteMx.Messages);
    }
}
