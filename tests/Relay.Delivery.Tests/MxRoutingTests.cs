// Where mail goes: MX preference, fallback, implicit MX, null MX, NXDOMAIN, SERVFAIL, address literals, caching.
using Relay.Scheduler;

namespace Relay.Delivery.Tests;

public sealed class MxRoutingTests : IAsyncLifetime
{
    private readonly World _world = new();
    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _world.DisposeAsync();

    private static RecipientOutcome Single(IReadOnlyList<RecipientOutcome> outcomes) => Assert.Single(outcomes);

    [Fact]
    public async Task Mail_goes_to_the_most_preferred_mx_host()
    {
        _world.Dns.Mx("remote.test", (20, "mx2.remote.test"), (10, "mx1.remote.test"))
                  .Address("mx1.remote.test", "127.0.0.2").Address("mx2.remote.test", "127.0.0.3");
        var primary = _world.Server("127.0.0.2");
        var secondary = _world.Server("127.0.0.3");

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Equal("mx1.remote.test[127.0.0.2]", outcome.RemoteHost);
        Assert.Single(primary.Messages);
        Assert.Empty(secondary.Messages);
    }

    [Fact]
    public async Task A_refused_primary_falls_back_to_the_secondary_mx()
    {
        _world.Dns.Mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
                  .Address("mx1.remote.test", "127.0.0.9").Address("mx2.remote.test", "127.0.0.3");
        var secondary = _world.Server("127.0.0.3");

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Equal("mx2.remote.test[127.0.0.3]", outcome.RemoteHost);
        Assert.Single(secondary.Messages);
    }

    [Fact]
    public async Task A_4xx_greeting_moves_on_to_the_next_host()
    {
        _world.Dns.Mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
                  .Address("mx1.remote.test", "127.0.0.2").Address("mx2.remote.test", "127.0.0.3");
        var busy = _world.Server("127.0.0.2");
        busy.Greeting = "421 4.3.2 too busy, try later";
        var secondary = _world.Server("127.0.0.3");

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Single(secondary.Messages);
        Assert.Empty(busy.Messages);
    }

    [Fact]
    public async Task When_every_host_fails_the_recipient_is_deferred_with_the_last_error()
    {
        _world.Dns.Mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
                  .Address("mx1.remote.test", "127.0.0.9").Address("mx2.remote.test", "127.0.0.3");
        _world.Server("127.0.0.3").Greeting = "421 4.3.2 too busy, try later";

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default));

        Assert.Equal(OutcomeKind.Temporary, outcome.Kind);
        Assert.Equal(421, outcome.Code);
        Assert.Equal("4.3.2", outcome.EnhancedStatus);
        Assert.Contains("too busy", outcome.Text);
        Assert.Equal("mx2.remote.test[127.0.0.3]", outcome.RemoteHost);
    }

    [Fact]
    public async Task A_domain_without_mx_records_gets_its_address_as_implicit_mx()
    {
        _world.Dns.Address("remote.test", "127.0.0.4");
        var server = _world.Server("127.0.0.4");

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Equal("remote.test[127.0.0.4]", outcome.RemoteHost);
        Assert.Single(server.Messages);
    }

    [Fact]
    public async Task A_null_mx_fails_permanently_with_5_1_10()
    {
        _world.Dns.NullMx("remote.test").Address("remote.test", "127.0.0.4");
        var server = _world.Server("127.0.0.4");

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default));

        Assert.Equal(OutcomeKind.Permanent, outcome.Kind);
        Assert.Equal((556, "5.1.10"), (outcome.Code, outcome.EnhancedStatus));
        Assert.Equal(0, server.Connections);
    }

    [Fact]
    public async Task Nxdomain_fails_permanently_with_5_1_2()
    {
        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("nowhere.test", World.Message(), "a@nowhere.test"), default));

        Assert.Equal(OutcomeKind.Permanent, outcome.Kind);
        Assert.Equal("5.1.2", outcome.EnhancedStatus);
        Assert.Contains("nowhere.test", outcome.Text);
    }

    [Fact]
    public async Task Servfail_is_temporary()
    {
        _world.Dns.ServFail("broken.test");

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("broken.test", World.Message(), "a@broken.test"), default));

        Assert.Equal(OutcomeKind.Temporary, outcome.Kind);
        Assert.Equal("4.4.3", outcome.EnhancedStatus);
        Assert.Contains("SERVFAIL", outcome.Text);
    }

    [Fact]
    public async Task A_dns_timeout_is_temporary()
    {
        _world.Dns.Silent("slow.test");
        var agent = new DeliveryAgent("relay.example.test",
            new Relay.Config.Settings.ResolverSettings([_world.Dns.EndPoint], TimeSpan.FromMilliseconds(200)),
            new Relay.Config.Settings.DeliverySettings(_world.Port, TimeSpan.FromSeconds(5)), new DeliveryOptions(), _world.Clock);
        await using var _ = agent;

        var outcome = Single(await agent.DeliverAsync(_world.Request("slow.test", World.Message(), "a@slow.test"), default));

        Assert.Equal(OutcomeKind.Temporary, outcome.Kind);
        Assert.Equal("4.4.3", outcome.EnhancedStatus);
    }

    [Fact]
    public async Task An_address_literal_goes_straight_to_that_address_without_dns()
    {
        var server = _world.Server("127.0.0.5");

        var outcome = Single(await _world.Agent().DeliverAsync(_world.Request("[127.0.0.5]", World.Message(), "a@[127.0.0.5]"), default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        Assert.Contains("RCPT TO:<a@[127.0.0.5]>", server.Commands);
        Assert.Equal(0, _world.Dns.Queries("[127.0.0.5]", TestDns.MX));
    }

    [Fact]
    public async Task Mx_answers_are_cached_for_their_ttl()
    {
        _world.Dns.Mx("remote.test", (10, "mx1.remote.test")).Ttl("remote.test", 60).Address("mx1.remote.test", "127.0.0.2");
        _world.Server("127.0.0.2");
        var agent = _world.Agent();

        await agent.DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default);
        await agent.DeliverAsync(_world.Request("remote.test", World.Message(), "b@remote.test"), default);
        Assert.Equal(1, _world.Dns.Queries("remote.test", TestDns.MX));

        _world.Clock.Advance(TimeSpan.FromSeconds(61));
        await agent.DeliverAsync(_world.Request("remote.test", World.Message(), "c@remote.test"), default);
        Assert.Equal(2, _world.Dns.Queries("remote.test", TestDns.MX));
    }

    [Fact]
    public async Task Equal_preferences_are_shuffled_and_lower_ones_always_come_first()
    {
        _world.Dns.Mx("remote.test", (10, "a.remote.test"), (10, "b.remote.test"), (5, "first.remote.test"), (20, "last.remote.test"))
                  .Address("a.remote.test", "127.0.0.2").Address("b.remote.test", "127.0.0.3")
                  .Address("first.remote.test", "127.0.0.4").Address("last.remote.test", "127.0.0.5");
        var resolver = _world.Agent(random: new Random(7)).Resolver;

        var seconds = new HashSet<string>();
        for (var i = 0; i < 20; i++)
        {
            var hosts = (await resolver.ResolveAsync("remote.test", default)).Hosts.Select(h => h.Name).ToArray();
            Assert.Equal("first.remote.test", hosts[0]);
            Assert.Equal("last.remote.test", hosts[3]);
            seconds.Add(hosts[1]);
        }
        Assert.Equal(["a.remote.test", "b.remote.test"], seconds.Order());
    }
}
