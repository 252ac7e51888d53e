using Relay.Config.Strategy;
using static Relay.Config.Tests.ConfigFixtures;

namespace Relay.Config.Tests;

public class StrategyTests
{
    /// <summary>A strategy whose single rule is <paramref name="condition"/>: 'hit' when true, 'miss' otherwise.</summary>
    private static QueueStrategy OneRule(string condition) => LoadOk($$"""
        [local]
        domains = ["example.test", "Corp.Example"]
        [lists]
        vip = ["ceo@example.test", "boss@partner.test"]
        [queue.strategy]
        schedule = [ { if = "{{condition}}", then = "'hit'" }, { else = "'miss'" } ]
        [queue.schedule.hit]
        queue-name = "q"
        [queue.schedule.miss]
        queue-name = "q"
        [queue.virtual.q]
        threads-per-node = 1
        """).Queue.Strategy;

    private static readonly RecipientContext Sample = new()
    {
        Recipient = "User@Mail.Example.ORG",
        Sender = "app@Shop.Example.NET",
        Priority = 3,
        Source = "smtp",
        Size = 4096,
        RemoteIp = "192.0.2.10",
        Listener = "submission",
        AuthenticatedAs = "app1",
        Subject = "Your reset code",
        Headers = name => name.Equals("X-Campaign", StringComparison.OrdinalIgnoreCase) ? "spring-sale" : null,
    };

    private static bool Hits(string condition, RecipientContext? context = null)
    {
        var decision = OneRule(condition).Classify(context ?? Sample);
        Assert.Null(decision.Error);
        return decision.Schedule.Name == "hit";
    }

    [Theory]
    [InlineData("rcpt == 'User@Mail.Example.ORG'")]
    [InlineData("rcpt_domain == 'mail.example.org'")]
    [InlineData("sender == 'app@Shop.Example.NET'")]
    [InlineData("sender_domain == 'shop.example.net'")]
    [InlineData("priority == 3")]
    [InlineData("priority > 2 && priority < 4")]
    [InlineData("source == 'smtp'")]
    [InlineData("size == 4096")]
    [InlineData("size > 1000")]
    [InlineData("remote_ip == '192.0.2.10'")]
    [InlineData("listener == 'submission'")]
    [InlineData("authenticated_as == 'app1'")]
    [InlineData("subject == 'Your reset code'")]
    public void Every_variable_is_bound(string condition)
    {
        Assert.True(Hits(condition));
        // The negation must miss, so the rule really looked at the value.
        Assert.False(Hits($"!({condition})"));
    }

    [Fact]
    public void Null_sender_has_an_empty_sender_domain()
    {
        var ctx = new RecipientContext { Recipient = "a@b.test", Sender = "" };
        Assert.True(Hits("sender_domain == '' && sender == ''", ctx));
    }

    [Theory]
    [InlineData("is_local_domain('*', 'example.test')", true)]
    [InlineData("is_local_domain('*', 'EXAMPLE.test')", true)]
    [InlineData("is_local_domain('*', 'corp.example')", true)]
    [InlineData("is_local_domain('*', rcpt_domain)", false)]
    [InlineData("header('X-Campaign') == 'spring-sale'", true)]
    [InlineData("header('x-campaign') == 'spring-sale'", true)]
    [InlineData("header('X-Missing') == ''", true)]
    [InlineData("contains(subject, 'RESET')", true)]
    [InlineData("contains(subject, 'invoice')", false)]
    [InlineData("starts_with(rcpt, 'user@')", true)]
    [InlineData("starts_with(rcpt, 'admin@')", false)]
    [InlineData("ends_with(rcpt_domain, '.example.org')", true)]
    [InlineData("ends_with(rcpt_domain, '.example.com')", false)]
    [InlineData("matches('^[a-z]+@shop[.]', sender)", false)]
    [InlineData("matches('(?i)^[a-z]+@shop[.]', sender)", true)]
    [InlineData("matches('code$', subject)", true)]
    [InlineData("in_list('vip', 'CEO@example.test')", true)]
    [InlineData("in_list('vip', rcpt)", false)]
    [InlineData("if(priority > 0, true, false)", true)]
    public void Every_function_works(string condition, bool expected) => Assert.Equal(expected, Hits(condition));

    [Fact]
    public void Header_before_data_is_empty()
    {
        var ctx = new RecipientContext { Recipient = "a@b.test" };
        Assert.True(Hits("header('Subject') == ''", ctx));
    }

    [Fact]
    public void Rules_are_tried_in_order_and_the_first_true_wins()
    {
        var strategy = LoadOk("""
            [queue.strategy]
            schedule = [ { if = "priority >= 0", then = "'first'" },
                         { if = "priority >= 5", then = "'second'" },
                         { else = "'fallback'" } ]
            [queue.schedule.first]
            queue-name = "q"
            [queue.schedule.second]
            queue-name = "q"
            [queue.schedule.fallback]
            queue-name = "q"
            [queue.virtual.q]
            threads-per-node = 1
            """).Queue.Strategy;
        Assert.Equal("first", strategy.Classify(new RecipientContext { Recipient = "a@b.test", Priority = 9 }).Schedule.Name);
        Assert.Equal("fallback", strategy.Classify(new RecipientContext { Recipient = "a@b.test", Priority = -1 }).Schedule.Name);
    }

    [Fact]
    public void Then_may_be_an_expression_that_names_a_schedule()
    {
        var strategy = LoadOk(MinimalQueue.Replace("then = \"'urgent'\"", "then = \"if(priority == 9, 'urgent', 'default')\"")).Queue.Strategy;
        Assert.Equal("urgent", strategy.Classify(new RecipientContext { Recipient = "a@b.test", Priority = 9 }).Schedule.Name);
        Assert.Equal("default", strategy.Classify(new RecipientContext { Recipient = "a@b.test", Priority = 7 }).Schedule.Name);
    }

    [Fact]
    public void A_then_expression_naming_no_schedule_falls_back_with_an_error()
    {
        var strategy = LoadOk(MinimalQueue.Replace("then = \"'urgent'\"", "then = \"if(priority == 9, 'urgent', 'nosuch')\"")).Queue.Strategy;
        var decision = strategy.Classify(new RecipientContext { Recipient = "a@b.test", Priority = 7 });
        Assert.Equal("default", decision.Schedule.Name);
        Assert.Contains("nosuch", decision.Error!.Message);
    }

    [Fact]
    public void A_rule_failing_at_run_time_falls_to_else_and_reports_the_error()
    {
        // The regex comes from a header, so it can only fail while classifying, not at load.
        var strategy = LoadOk(MinimalQueue.Replace("priority >= 6", "matches(header('X-Pattern'), rcpt)")).Queue.Strategy;
        var ctx = new RecipientContext { Recipient = "a@b.test", Priority = 9, Headers = _ => "([unclosed" };
        var decision = strategy.Classify(ctx);
        Assert.Equal("default", decision.Schedule.Name);
        var error = Assert.IsType<StrategyException>(decision.Error);
        Assert.Equal(2, error.Rule.Line);
        Assert.Contains("line 2", error.Message);
    }

    [Fact]
    public void Decision_carries_the_whole_schedule()
    {
        var decision = LoadOk(MinimalQueue).Queue.Strategy.Classify(new RecipientContext { Recipient = "a@b.test", Priority = 6 });
        Assert.Equal("urgent", decision.Schedule.Name);
        Assert.Equal("urgent", decision.Schedule.QueueName);
        Assert.Equal([TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(1)], decision.Schedule.Retry);
        Assert.Equal([TimeSpan.FromMinutes(10)], decision.Schedule.Notify);
    }
}
