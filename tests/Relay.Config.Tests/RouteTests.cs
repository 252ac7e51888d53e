// [delivery] route: the strategy's rule syntax, naming 'mx' or a [delivery.smart-host.*].
using Relay.Config.Strategy;
using static Relay.Config.Tests.ConfigFixtures;

namespace Relay.Config.Tests;

public class RouteTests
{
    // Line numbers below count from the first line of this text.
    private const string Delivery = """
        [delivery]
        route = [ { if = "rcpt_domain == 'provider.test'", then = "'provider'" },
                  { if = "sender_domain == 'app.test' && priority >= 6", then = "'backup'" },
                  { else = "'mx'" } ]

        [delivery.smart-host.provider]
        host = "smtp.provider.test"
        port = 2587

        [delivery.smart-host.backup]
        host = "192.0.2.10"
        tls = "none"

        """;

    private static DeliveryRoute Load(string delivery = Delivery) => LoadOk(delivery + MinimalQueue).Delivery.Route!;

    [Fact]
    public void Route_rules_load_and_pick_a_smart_host_or_mx()
    {
        var route = Load();
        Assert.Equal(2, route.Rules.Count);
        Assert.Equal("mx", route.Fallback);
        Assert.Equal(new RouteDecision("provider", null), route.Select(new() { Recipient = "a@Provider.TEST" }));
        Assert.Equal(new RouteDecision("backup", null), route.Select(new() { Recipient = "a@x.test", Sender = "n@app.test", Priority = 6 }));
        Assert.Equal(new RouteDecision(null, null), route.Select(new() { Recipient = "a@x.test", Sender = "n@app.test" }));
    }

    [Fact]
    public void Without_else_the_fallback_is_mx()
    {
        var route = Load(Delivery.Replace(",\n          { else = \"'mx'\" }", ""));
        Assert.Equal("mx", route.Fallback);
        Assert.Null(route.Select(new() { Recipient = "a@elsewhere.test" }).SmartHost);
    }

    [Fact]
    public void Else_may_name_a_smart_host()
    {
        var route = Load(Delivery.Replace("{ else = \"'mx'\" }", "{ else = \"'provider'\" }"));
        Assert.Equal("provider", route.Select(new() { Recipient = "a@elsewhere.test" }).SmartHost);
    }

    [Fact]
    public void No_route_key_means_no_rules()
    {
        Assert.Null(LoadOk(MinimalQueue).Delivery.Route);
    }

    [Fact]
    public void Then_literal_naming_no_smart_host_is_an_error_with_its_line()
    {
        var errors = LoadErrors(Delivery.Replace("then = \"'backup'\"", "then = \"'bakcup'\"") + MinimalQueue);
        AssertError(errors, 3, "delivery.route[1].then", "smart host 'bakcup' is not defined");
        Assert.Contains(errors, e => e.ToString().StartsWith("test.toml:3: delivery.route[1].then:"));
    }

    [Fact]
    public void Else_literal_naming_no_smart_host_is_an_error()
    {
        var errors = LoadErrors(Delivery.Replace("{ else = \"'mx'\" }", "{ else = \"'MX'\" }") + MinimalQueue);
        AssertError(errors, 4, "delivery.route[2].else", "smart host 'MX' is not defined");
    }

    [Fact]
    public void A_smart_host_may_not_be_named_mx()
    {
        var errors = LoadErrors(Delivery.Replace("[delivery.smart-host.backup]", "[delivery.smart-host.mx]") + MinimalQueue);
        AssertError(errors, 10, "delivery.smart-host.mx", "'mx' is reserved");
    }

    [Fact]
    public void A_bad_expression_is_an_error()
    {
        var errors = LoadErrors(Delivery.Replace("rcpt_domain == 'provider.test'", "rcpt_domian == 'provider.test'") + MinimalQueue);
        AssertError(errors, 2, "delivery.route[0].if", "unknown variable 'rcpt_domian'");

        errors = LoadErrors(Delivery.Replace("priority >= 6", "priority >=") + MinimalQueue);
        AssertError(errors, 3, "delivery.route[1].if", "does not parse");
    }

    [Fact]
    public void Headers_are_refused_because_delivery_does_not_read_them()
    {
        var errors = LoadErrors(Delivery.Replace("priority >= 6", "header('X-Kind') == 'otp'") + MinimalQueue);
        AssertError(errors, 3, "delivery.route[1].if", "'header()' is not available");
        errors = LoadErrors(Delivery.Replace("priority >= 6", "subject == 'x'") + MinimalQueue);
        AssertError(errors, 3, "delivery.route[1].if", "'subject' is not available");
    }

    [Fact]
    public void The_old_domain_table_form_is_an_error_that_shows_the_rule_syntax()
    {
        var errors = LoadErrors("""
            [delivery.smart-host.provider]
            host = "smtp.provider.test"

            [delivery.route]
            "provider.test" = "provider"

            """ + MinimalQueue);
        Assert.Contains(errors, e => e.Key == "delivery.route" && e.Message.Contains("expected a list of rules"));
    }

    [Fact]
    public void A_computed_name_that_is_no_smart_host_falls_back_with_an_error()
    {
        var route = Load(Delivery.Replace("then = \"'provider'\"", "then = \"if(priority > 0, 'provider', 'nosuch')\""));
        var decision = route.Select(new() { Recipient = "a@provider.test" });
        Assert.Null(decision.SmartHost);
        var error = Assert.IsType<StrategyException>(decision.Error);
        Assert.Contains("route rule at line 2", error.Message);
        Assert.Contains("nosuch", error.Message);
        Assert.Equal("provider", route.Select(new() { Recipient = "a@provider.test", Priority = 1 }).SmartHost);
    }

    [Fact]
    public void Route_may_use_lists_and_is_local_domain()
    {
        var route = Load("""
            [lists]
            via-provider = ["a@x.test"]

            """ + Delivery.Replace("rcpt_domain == 'provider.test'", "in_list('via-provider', rcpt) || is_local_domain('*', sender_domain)"));
        Assert.Equal("provider", route.Select(new() { Recipient = "a@x.test" }).SmartHost);
        Assert.Null(route.Select(new() { Recipient = "b@x.test" }).SmartHost);
    }

    [Fact]
    public void The_shipped_config_route_example_loads_when_uncommented()
    {
        var lines = File.ReadAllLines(Path.Combine(RepoRoot, "config", "config.toml")).ToList();
        var start = lines.FindIndex(l => l.StartsWith("# route = ["));
        var end = lines.FindIndex(start, l => l.StartsWith("# password"));
        Assert.True(start > 0 && end > start, "the route example is in config/config.toml");
        for (var i = start; i <= end; i++)
            lines[i] = lines[i] == "#" ? "" : lines[i][2..];
        var result = ConfigLoader.Parse(string.Join("\n", lines), "config.toml", RepoRoot);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        var route = result.Settings!.Delivery.Route!;
        Assert.Equal("provider", route.Select(new() { Recipient = "a@provider.test" }).SmartHost);
        Assert.Equal("provider", route.Select(new() { Recipient = "a@x.test", Sender = "n@app.example.test" }).SmartHost);
        Assert.Null(route.Select(new() { Recipient = "a@x.test", Sender = "n@other.test" }).SmartHost);
        Assert.Equal("smtp.provider.test", result.Settings.Delivery.SmartHosts["provider"].Host);
    }
}
