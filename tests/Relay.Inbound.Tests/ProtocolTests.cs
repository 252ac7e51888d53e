// Command-level protocol rules, driven with raw sockets: sequence, syntax, limits, errors.
using System.Text;
using Relay.Config.Settings;
using Relay.Inbound.Tests.Harness;

namespace Relay.Inbound.Tests;

public sealed class ProtocolTests
{
    [Fact]
    public async Task Commands_out_of_order_get_503_and_the_session_goes_on()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.ConnectAsync(server.Port);
        Assert.Contains("relay.test", await client.ExpectAsync(220));
        await client.CommandAsync("MAIL FROM:<a@local.test>", SmtpReplies.EhloFirst);
        await client.CommandAsync("HELO client.test", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", SmtpReplies.MailFirst);
        await client.CommandAsync("DATA", SmtpReplies.MailFirst);
        await client.CommandAsync("MAIL FROM:<a@local.test>", SmtpReplies.SenderOk);
        await client.CommandAsync("MAIL FROM:<a@local.test>", SmtpReplies.NestedMail);
        await client.CommandAsync("DATA", SmtpReplies.NoValidRecipients);
        await client.CommandAsync("RSET", SmtpReplies.ResetOk);
        await client.CommandAsync("RCPT TO:<b@local.test>", SmtpReplies.MailFirst);
        await client.CommandAsync("NOOP", SmtpReplies.Ok);
        await client.CommandAsync("QUIT", 221);
        Assert.True(await client.IsClosedAsync());
    }

    [Theory]
    [InlineData("FOO bar", 500, "5.5.1")]
    [InlineData("EXPN list", 502, "5.5.1")]
    [InlineData("EHLO", 501, "5.5.4")]
    [InlineData("MAIL FROM:a@local.test", 501, "5.1.7")]
    [InlineData("MAIL TO:<a@local.test>", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> SIZE=abc", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> BODY=BINARYMIME", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> RET=ALL", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> ENVID=bad=xtext", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> SIZE=1 SIZE=2", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> FROB=1", 555, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> MT-PRIORITY=10", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> MT-PRIORITY=-10", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> MT-PRIORITY=high", 501, "5.5.4")]
    [InlineData("MAIL FROM:<a@local.test> SIZE=999999999999", 552, "5.3.4")]
    [InlineData("MAIL FROM:<jörg@local.test>", 553, "5.6.7")]
    [InlineData("MAIL FROM:<a..b@local.test>", 501, "5.1.7")]
    [InlineData("MAIL FROM:<a@-bad-.test>", 501, "5.1.7")]
    [InlineData("VRFY", 501, "5.5.4")]
    [InlineData("VRFY bob", 252, "2.5.0")]
    [InlineData("HELP", 214, "2.0.0")]
    [InlineData("RSET now", 501, "5.5.4")]
    public async Task Bad_commands_get_the_right_code_and_enhanced_code(string line, int code, string enhanced)
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        var reply = await client.CommandAsync(line, code);
        Assert.StartsWith($"{code} {enhanced} ", reply);
        await client.CommandAsync("NOOP", SmtpReplies.Ok);
    }

    [Theory]
    [InlineData("RCPT TO:<b@local.test> NOTIFY=SOMETIMES", 501, "5.5.4")]
    [InlineData("RCPT TO:<b@local.test> NOTIFY=NEVER,FAILURE", 501, "5.5.4")]
    [InlineData("RCPT TO:<b@local.test> ORCPT=rfc822", 501, "5.5.4")]
    [InlineData("RCPT TO:<b@local.test> ORCPT=rfc822;a+ZZb", 501, "5.5.4")]
    [InlineData("RCPT TO:<>", 501, "5.1.3")]
    [InlineData("RCPT TO:<b@local.test", 501, "5.1.3")]
    [InlineData("RCPT TO:<b@local.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2B1@local.test", 250, "2.1.5")]
    [InlineData("RCPT TO:<Postmaster>", 250, "2.1.5")]
    public async Task Rcpt_parameters_are_validated(string line, int code, string enhanced)
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        Assert.StartsWith($"{code} {enhanced} ", await client.CommandAsync(line, code));
    }

    [Fact]
    public async Task A_command_over_512_octets_is_500_5_5_2_and_the_next_one_works()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("NOOP " + new string('x', 600), SmtpReplies.LineTooLong);
        await client.CommandAsync("NOOP " + new string('x', 20_000), SmtpReplies.LineTooLong);
        await client.CommandAsync("NOOP " + new string('x', 505), SmtpReplies.Ok); // 512 with CRLF
        await client.CommandAsync("NOOP " + new string('x', 506), SmtpReplies.LineTooLong);
        await client.CommandAsync("NOOP", SmtpReplies.Ok);
    }

    [Fact]
    public async Task Bare_LF_CR_and_NUL_in_commands_are_refused_and_never_run()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.SendRawAsync("MAIL FROM:<a@local.test>\n");
        await client.ExpectAsync(SmtpReplies.BareLineEndingInCommand);
        await client.SendRawAsync("MAIL FROM:<a@local.test>\rRCPT TO:<b@local.test>\r\n");
        await client.ExpectAsync(SmtpReplies.NulInCommand);
        await client.SendRawAsync("NOOP\0\r\n");
        await client.ExpectAsync(SmtpReplies.NulInCommand);
        await client.CommandAsync("RCPT TO:<b@local.test>", SmtpReplies.MailFirst); // no MAIL ever ran
    }

    [Fact]
    public async Task Too_many_errors_end_the_session_with_421()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxErrors = 3 }));
        await using (var client = await RawSmtpClient.GreetedAsync(server.Port))
        {
            for (var i = 0; i < 3; i++)
            {
                await client.CommandAsync("BOGUS", SmtpReplies.UnknownCommand);
            }

            Assert.StartsWith("421 4.7.0 ", await client.CommandAsync("BOGUS", 421));
            Assert.True(await client.IsClosedAsync());
        }

        await using var next = await RawSmtpClient.GreetedAsync(server.Port);
        await next.CommandAsync("NOOP", SmtpReplies.Ok);
    }

    [Fact]
    public async Task An_idle_client_gets_421_4_4_2_and_is_disconnected()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { Timeout = TimeSpan.FromMilliseconds(300) }));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        Assert.StartsWith("421 4.4.2 ", await client.ExpectAsync(421)); // nothing sent: the timer fires
        Assert.True(await client.IsClosedAsync());
    }

    [Fact]
    public async Task Idle_timeout_also_applies_in_the_middle_of_data()
    {
        // Long enough that a loaded machine never times out the commands before DATA (the timer restarts at each).
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { Timeout = TimeSpan.FromMilliseconds(1500) }));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.CommandAsync("DATA", 354);
        await client.SendAsync("Subject: half a message");
        await client.ExpectAsync(SmtpReplies.IdleTimeout("relay.test"));
        Assert.True(await client.IsClosedAsync());
        await Eventually.TrueAsync(() => server.Spool.Discarded == 1);
        Assert.Empty(server.Spool.Committed);
    }

    [Fact]
    public async Task Connections_over_the_limit_get_421_4_7_0()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxConnections = 2 }));
        await using var one = await RawSmtpClient.GreetedAsync(server.Port);
        await using var two = await RawSmtpClient.GreetedAsync(server.Port);
        await using (var three = await RawSmtpClient.ConnectAsync(server.Port))
        {
            Assert.StartsWith("421 4.7.0 ", await three.ExpectAsync(421));
            Assert.True(await three.IsClosedAsync());
        }

        await one.CommandAsync("QUIT", 221);
        Assert.True(await one.IsClosedAsync());
        await Eventually.TrueAsync(() => server.Server.ActiveConnections == 1);
        await using var four = await RawSmtpClient.GreetedAsync(server.Port);
        await four.CommandAsync("NOOP", SmtpReplies.Ok);
    }

    [Fact]
    public async Task Stopping_the_server_tells_idle_sessions_421_4_3_2()
    {
        var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        var stop = server.Server.StopAsync(CancellationToken.None);
        Assert.StartsWith("421 4.3.2 ", await client.ExpectAsync(421));
        Assert.True(await client.IsClosedAsync());
        await stop;
        await server.DisposeAsync();
    }

    [Fact]
    public async Task Pipelined_commands_in_one_packet_get_one_reply_each_in_order()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.SendRawAsync(
            "MAIL FROM:<a@local.test>\r\nRCPT TO:<b@local.test>\r\nRCPT TO:<c@remote.test>\r\nRCPT TO:<bad\r\nDATA\r\n");
        await client.ExpectAsync(SmtpReplies.SenderOk);
        await client.ExpectAsync(SmtpReplies.RecipientOk);
        await client.ExpectAsync(SmtpReplies.RecipientOk);
        await client.ExpectAsync(SmtpReplies.BadRcptSyntax);
        await client.ExpectAsync(354);
        await client.SendRawAsync("Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\n");
        await client.ExpectAsync(250);
        await client.ExpectAsync(SmtpReplies.ResetOk);
        await client.ExpectAsync(SmtpReplies.Ok);
        Assert.Equal(2, server.Spool.Single().Envelope.Recipients.Count);
    }

    [Fact]
    public async Task Every_reply_but_greeting_ehlo_and_intermediate_ones_carries_an_enhanced_code()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        foreach (var line in new[] { "NOOP", "HELP", "VRFY x", "BOGUS", "MAIL FROM:<>", "RCPT TO:<x@local.test>", "RSET", "QUIT" })
        {
            await client.SendAsync(line);
            var reply = await client.ReadReplyAsync();
            Assert.Matches(RawSmtpClient.EnhancedReply(), reply[^1]);
        }
    }

    [Fact]
    public async Task An_abrupt_disconnect_mid_data_discards_the_message()
    {
        await using var server = await TestServer.StartAsync();
        await using (var client = await RawSmtpClient.GreetedAsync(server.Port))
        {
            await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
            await client.CommandAsync("RCPT TO:<b@local.test>", 250);
            await client.CommandAsync("DATA", 354);
            await client.SendRawAsync(Encoding.ASCII.GetBytes("Subject: x\r\n\r\npartial"));
        }

        await Eventually.TrueAsync(() => server.Spool.Discarded == 1);
        Assert.Empty(server.Spool.Committed);
    }
}
