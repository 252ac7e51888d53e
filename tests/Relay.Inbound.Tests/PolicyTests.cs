// Relay control, priority and classification, back-pressure: the policy decisions made per session.
using System.Net;
using Relay.Config.Settings;
using Relay.Inbound.Tests.Harness;

namespace Relay.Inbound.Tests;

public sealed class PolicyTests
{
    /// <summary>A server where 127.0.0.1 is not in the relay networks: an outside client.</summary>
    private static Task<TestServer> UntrustedAsync() =>
        TestServer.StartAsync(TestSettings.Create(new SessionSettings { Relay = new RelayControlSettings { Networks = [] } }));

    [Theory]
    [InlineData("<b@remote.test>")]
    [InlineData("<b%remote.test@local.test>")]
    [InlineData("<remote.test!b@local.test>")]
    [InlineData("<\"b@remote.test\"@local.test>")]
    [InlineData("<@local.test:b@remote.test>")]
    [InlineData("<@remote.test:b@local.test>")]
    [InlineData("<b@[192.0.2.1]>")]
    [InlineData("<b@LOCAL.TEST.evil.test>")]
    public async Task Address_tricks_never_open_the_relay(string rcpt)
    {
        await using var server = await UntrustedAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@remote.test>", 250);
        await client.CommandAsync($"RCPT TO:{rcpt}", SmtpReplies.RelayDenied);
        await client.CommandAsync("DATA", SmtpReplies.NoValidRecipients);
        Assert.Empty(server.Spool.Committed);
    }

    [Theory]
    [InlineData("<b@local.test>")]
    [InlineData("<B@Local.Test>")]
    [InlineData("<Postmaster>")]
    public async Task Local_domains_are_accepted_from_anyone(string rcpt)
    {
        await using var server = await UntrustedAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@remote.test>", 250);
        await client.CommandAsync($"RCPT TO:{rcpt}", SmtpReplies.RecipientOk);
    }

    [Fact]
    public async Task Relay_networks_may_relay_and_a_source_route_is_dropped()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<@hop.test,@hop2.test:b@remote.test>", SmtpReplies.RecipientOk);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync("Subject: x\r\n\r\nhi\r\n.\r\n");
        await client.ExpectAsync(250);
        Assert.Equal("b@remote.test", server.Spool.Single().Envelope.Recipients[0].Address);
    }

    [Fact]
    public async Task Recipients_over_the_limit_get_452_4_5_3_and_the_rest_are_kept()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxRecipients = 2 }));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.CommandAsync("RCPT TO:<c@local.test>", 250);
        await client.CommandAsync("RCPT TO:<d@local.test>", SmtpReplies.TooManyRecipients);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync("Subject: x\r\n\r\nhi\r\n.\r\n");
        await client.ExpectAsync(250);
        Assert.Equal(["b@local.test", "c@local.test"], server.Spool.Single().Envelope.Recipients.Select(r => r.Address));
    }

    [Fact]
    public async Task A_full_virtual_queue_gets_452_4_3_1_at_rcpt_and_others_still_flow()
    {
        await using var server = await TestServer.StartAsync();
        server.Admission.Full.Add(TestSettings.Urgent.QueueName);
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test> MT-PRIORITY=7", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", SmtpReplies.QueueFull);
        await client.CommandAsync("RSET", 250);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", SmtpReplies.RecipientOk);
    }

    [Fact]
    public async Task A_strategy_that_throws_gets_451_and_nothing_is_queued()
    {
        var spool = new MemorySpool();
        await using var server = new InboundServer(TestSettings.Create(), spool, classify: _ => throw new InvalidOperationException("boom"));
        await server.StartAsync(CancellationToken.None);
        await using var client = await RawSmtpClient.GreetedAsync(server.EndPoints[0].EndPoint.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", SmtpReplies.LocalError);
        await client.CommandAsync("NOOP", SmtpReplies.Ok);
    }

    private static async Task<StoredMessage> SendAsync(TestServer server, string mailParams, string headers)
    {
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>" + mailParams, 250);
        await client.CommandAsync("RCPT TO:<b@remote.test>", 250);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync(headers + "Subject: p\r\n\r\nbody\r\n.\r\n");
        await client.ExpectAsync(250);
        return server.Spool.Committed.Last();
    }

    [Theory]
    [InlineData(" MT-PRIORITY=9", "", 9)]
    [InlineData(" MT-PRIORITY=-9", "X-Message-Priority: urgent\r\n", -9)] // MT-PRIORITY wins over the header
    [InlineData(" MT-PRIORITY=+4", "", 4)]
    [InlineData("", "X-Message-Priority: urgent\r\n", 6)]
    [InlineData("", "X-Message-Priority: Immediate\r\n", 6)]
    [InlineData("", "X-Message-Priority: high\r\n", 3)]
    [InlineData("", "X-Message-Priority: medium\r\n", 0)]
    [InlineData("", "X-Message-Priority: low\r\n", -3)]
    [InlineData("", "X-Message-Priority:  bulk \r\n", -6)]
    [InlineData("", "X-Message-Priority: -7\r\n", -7)]
    [InlineData("", "X-Message-Priority: 12\r\n", 1)]   // out of range: ignored, default applies
    [InlineData("", "X-Message-Priority: whenever\r\n", 1)]
    [InlineData("", "", 1)]
    public async Task Priority_comes_from_mt_priority_then_header_then_default(string mailParams, string headers, int expected)
    {
        var session = new SessionSettings { Priority = new PrioritySettings { Default = 1, MtPriorityFrom = [IPNetwork.Parse("127.0.0.0/8")] } };
        await using var server = await TestServer.StartAsync(TestSettings.Create(session));
        var stored = await SendAsync(server, mailParams, headers);
        Assert.Equal(expected, stored.Envelope.Priority);
        Assert.Equal(expected >= 6 ? "urgent" : "default", stored.Envelope.Recipients[0].Schedule);
    }

    [Fact]
    public async Task Mt_priority_from_a_client_not_allowed_is_ignored()
    {
        var session = new SessionSettings { Priority = new PrioritySettings { MtPriorityFrom = [IPNetwork.Parse("10.0.0.0/8")] } };
        await using var server = await TestServer.StartAsync(TestSettings.Create(session));
        var stored = await SendAsync(server, " MT-PRIORITY=9", "");
        Assert.Equal(0, stored.Envelope.Priority);
        Assert.Equal("default", stored.Envelope.Recipients[0].Schedule);
    }

    [Fact]
    public async Task The_priority_header_counts_only_from_header_from_clients()
    {
        var session = new SessionSettings { Priority = new PrioritySettings { HeaderFrom = [IPNetwork.Parse("10.0.0.0/8")] } };
        await using var server = await TestServer.StartAsync(TestSettings.Create(session));
        var stored = await SendAsync(server, "", "X-Message-Priority: urgent\r\n");
        Assert.Equal(0, stored.Envelope.Priority);
    }

    [Fact]
    public async Task By_default_the_header_counts_from_relay_networks_but_not_from_outsiders()
    {
        var session = new SessionSettings { Relay = new RelayControlSettings { Networks = [] } };
        await using var server = await TestServer.StartAsync(TestSettings.Create(session));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@remote.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync("X-Message-Priority: urgent\r\nSubject: p\r\n\r\nbody\r\n.\r\n");
        await client.ExpectAsync(250);
        Assert.Equal(0, server.Spool.Single().Envelope.Priority);
    }

    [Fact]
    public async Task Classification_runs_at_rcpt_without_headers_and_after_data_with_them()
    {
        await using var server = await TestServer.StartAsync();
        var stored = await SendAsync(server, " SIZE=100", "X-Kind: bulk\r\n");

        var seen = server.Classifier.Seen;
        Assert.Equal(2, seen.Count);
        Assert.Null(seen[0].Headers);
        Assert.Equal("", seen[0].Subject);
        Assert.Equal(100, seen[0].Size);
        Assert.Equal("p", seen[1].Subject);
        Assert.Equal("bulk", seen[1].Headers!("X-Kind"));
        Assert.Equal(stored.Envelope.Size, seen[1].Size);
        Assert.All(seen, c => Assert.Equal(("b@remote.test", "a@local.test", "smtp", "127.0.0.1", "smtp"), (c.Recipient, c.Sender, c.Source, c.RemoteIp, c.Listener)));
        Assert.Equal(("bulk", "bulk-q"), (stored.Envelope.Recipients[0].Schedule, stored.Envelope.Recipients[0].Queue));
    }
}
