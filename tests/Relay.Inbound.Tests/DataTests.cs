// DATA and BDAT content rules: dot-stuffing, smuggling, bare line ends, NUL, limits, loops, trace headers.
using System.Text;
using Relay.Config.Settings;
using Relay.Inbound.Tests.Harness;

namespace Relay.Inbound.Tests;

public sealed class DataTests
{
    private static async Task<RawSmtpClient> InDataAsync(TestServer server, string rcpt = "b@local.test")
    {
        var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync($"RCPT TO:<{rcpt}>", 250);
        await client.CommandAsync("DATA", 354);
        return client;
    }

    private static string Body(StoredMessage message) =>
        message.Text[(message.Text.IndexOf("\r\nSubject:", StringComparison.Ordinal) + 2)..];

    [Theory]
    [InlineData("\n.\r\n")]   // <LF>.<CR><LF>
    [InlineData("\r.\r\n")]   // <CR>.<CR><LF>
    [InlineData("\n.\n")]     // <LF>.<LF>
    [InlineData("\r\n.\n")]   // <CR><LF>.<LF>
    [InlineData("\r\n.\r")]   // <CR><LF>.<CR>
    public async Task Smuggled_end_of_data_never_splits_one_message_into_two(string fakeEnd)
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server);
        await client.SendRawAsync(
            "Subject: first\r\n\r\nhello" + fakeEnd +
            "MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nspoofed\r\n.\r\n");
        // The real end marker above is the only one; the whole thing is one message, and it has a bare CR/LF.
        await client.ExpectAsync(SmtpReplies.BareLineEndingInData);
        await client.CommandAsync("NOOP", SmtpReplies.Ok); // no stray replies from "smuggled" commands
        Assert.Empty(server.Spool.Committed);
        Assert.Equal(1, server.Spool.Discarded);
    }

    [Fact]
    public async Task Dot_stuffing_is_removed_and_only_CRLF_dot_CRLF_ends_the_data()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server);
        await client.SendRawAsync("Subject: dots\r\n\r\n..one\r\n...two\r\n.x\r\n. \r\n..\r\nend\r\n.\r\n");
        await client.ExpectAsync(250);
        Assert.Equal("Subject: dots\r\n\r\n.one\r\n..two\r\nx\r\n \r\n.\r\nend\r\n", Body(server.Spool.Single()));
    }

    [Fact]
    public async Task End_of_data_split_across_packets_is_found()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server);
        foreach (var piece in new[] { "Subject: split\r\n\r\nbody\r", "\n", ".", "\r", "\n" })
        {
            await client.SendRawAsync(piece);
        }

        await client.ExpectAsync(250);
        Assert.EndsWith("\r\nbody\r\n", server.Spool.Single().Text);
    }

    [Theory]
    [InlineData("Subject: x\r\n\r\nbare LF\nhere\r\n.\r\n", "bare")]
    [InlineData("Subject: x\r\n\r\nbare CR\rhere\r\n.\r\n", "bare")]
    [InlineData("Subject: x\r\n\r\nnul\0here\r\n.\r\n", "nul")]
    public async Task Bare_line_ends_and_NUL_in_data_are_refused_after_the_end(string data, string kind)
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server);
        await client.SendRawAsync(data);
        await client.ExpectAsync(kind == "nul" ? SmtpReplies.NulInData : SmtpReplies.BareLineEndingInData);
        await client.CommandAsync("MAIL FROM:<a@local.test>", SmtpReplies.SenderOk); // transaction was reset
        Assert.Empty(server.Spool.Committed);
    }

    [Fact]
    public async Task A_text_line_over_1000_octets_is_refused_and_1000_is_fine()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server);
        await client.SendRawAsync("Subject: x\r\n\r\n" + new string('a', 998) + "\r\n.\r\n");
        await client.ExpectAsync(250);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync("Subject: x\r\n\r\n" + new string('a', 999) + "\r\n.\r\n");
        await client.ExpectAsync(SmtpReplies.TextLineTooLong);
        Assert.Single(server.Spool.Committed);
    }

    [Theory]
    [InlineData("data", 100_000, 250)]
    [InlineData("data", 10_000, 552)]   // refused for its size: the reply still comes at the end
    [InlineData("bdat", 100_000, 250)]
    public async Task A_message_over_several_pipe_segments_is_always_answered(string verb, int maxSize, int code)
    {
        // The session once read the input buffer's length after handing it back to the pipe (whose segments are
        // then reused): now and then it thought more input was waiting, held its reply back, and the client hung
        // until its own timeout. A one-in-hundreds race, so many sessions; each must get its reply. (The DATA cases
        // failed every run before the fix; the BDAT path had the same read-after-AdvanceTo but never showed it.)
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxMessageSize = maxSize }));
        var body = "Subject: big\r\n\r\n" + string.Concat(Enumerable.Repeat(new string('x', 98) + "\r\n", 500));
        var clients = Enumerable.Range(0, 2).Select(async _ =>
        {
            for (var n = 0; n < 400; n++)
            {
                await using var client = await RawSmtpClient.GreetedAsync(server.Port);
                await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
                await client.CommandAsync("RCPT TO:<b@local.test>", 250);
                if (verb == "data")
                {
                    await client.CommandAsync("DATA", 354);
                    await client.SendRawAsync(body);
                    await client.SendRawAsync(".\r\n");
                }
                else
                {
                    await client.SendRawAsync($"BDAT {body.Length} LAST\r\n" + body[..^10]);
                    await client.SendRawAsync(body[^10..]);
                }

                await client.ExpectAsync(code);
            }
        });
        await Task.WhenAll(clients);
        Assert.Equal(code == 250 ? 800 : 0, server.Spool.Committed.Count);
    }

    [Fact]
    public async Task Size_limit_is_enforced_while_streaming_and_the_reply_waits_for_the_end()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxMessageSize = 10_000 }));
        await using var client = await InDataAsync(server);
        var line = new string('x', 98) + "\r\n";
        var big = new StringBuilder("Subject: big\r\n\r\n");
        for (var i = 0; i < 500; i++)
        {
            big.Append(line);
        }

        await client.SendRawAsync(big.ToString());
        Assert.False(client.HasPendingInput);
        await client.SendRawAsync(".\r\n");
        await client.ExpectAsync(SmtpReplies.TooBig);
        await client.CommandAsync("NOOP", SmtpReplies.Ok);
        Assert.Empty(server.Spool.Committed);
    }

    [Fact]
    public async Task More_Received_headers_than_allowed_is_a_loop()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxReceivedHeaders = 3 }));
        await using var client = await InDataAsync(server);
        var hops = string.Concat(Enumerable.Range(0, 4).Select(i => $"Received: from hop{i}.test by x; Mon, 1 Jan 2026 00:00:00 +0000\r\n"));
        await client.SendRawAsync(hops + "Subject: loop\r\n\r\nbody\r\n.\r\n");
        await client.ExpectAsync(SmtpReplies.MailLoop);

        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync(string.Concat(hops.Split("\r\n").Take(3).Select(h => h + "\r\n")) + "Subject: ok\r\n\r\nbody\r\n.\r\n");
        await client.ExpectAsync(250);
    }

    [Fact]
    public async Task Message_id_and_date_are_added_only_when_missing()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server);
        await client.SendRawAsync("Subject: bare\r\n\r\nbody\r\n.\r\n");
        await client.ExpectAsync(250);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.CommandAsync("DATA", 354);
        await client.SendRawAsync("Message-ID: <mine@client.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nSubject: full\r\n\r\nbody\r\n.\r\n");
        await client.ExpectAsync(250);

        var messages = server.Spool.Committed.ToArray();
        var first = MimeKit.HeaderList.Load(new MemoryStream(messages[0].Bytes));
        Assert.Matches($"^<{messages[0].Envelope.Id}\\.[0-9a-f]+@relay\\.test>$", first["Message-ID"]);
        Assert.NotNull(first["Date"]);
        var second = MimeKit.HeaderList.Load(new MemoryStream(messages[1].Bytes));
        Assert.Single(second, h => h.Field == "Message-ID");
        Assert.Single(second, h => h.Field == "Date");
        Assert.Equal("<mine@client.test>", second["Message-ID"]!.Trim());
    }

    [Fact]
    public async Task A_message_without_a_header_section_or_body_is_still_stored()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server);
        await client.SendRawAsync(".\r\n");
        await client.ExpectAsync(250);
        var stored = server.Spool.Single();
        Assert.StartsWith("Received: ", stored.Text);
        Assert.Contains("\r\nMessage-ID: ", stored.Text);
    }

    [Fact]
    public async Task Bdat_chunks_are_counted_exactly_and_may_hold_dots_and_commands()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        var chunk1 = "Subject: chunks\r\n\r\n.\r\nQUIT\r\n";
        var chunk2 = "last line\r\n";
        await client.SendRawAsync($"BDAT {chunk1.Length}\r\n{chunk1}BDAT {chunk2.Length} LAST\r\n{chunk2}");
        await client.ExpectAsync(SmtpReplies.ChunkOk(chunk1.Length));
        await client.ExpectAsync(250);
        Assert.EndsWith(chunk1 + chunk2, server.Spool.Single().Text);
        await client.CommandAsync("DATA", SmtpReplies.MailFirst);
    }

    [Fact]
    public async Task Bdat_without_a_transaction_still_consumes_its_chunk()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.SendRawAsync("BDAT 12 LAST\r\nNOOP\r\nNOOP\r\n");
        await client.ExpectAsync(SmtpReplies.BdatAfterError);
        await client.CommandAsync("NOOP", SmtpReplies.Ok); // the NOOPs inside the chunk were not commands
        await client.CommandAsync("BDAT x", SmtpReplies.SyntaxError);
    }

    [Fact]
    public async Task Bdat_over_the_size_limit_fails_fast_and_later_chunks_get_503()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxMessageSize = 100 }));
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        var chunk = new string('x', 150);
        await client.SendRawAsync($"BDAT 150\r\n{chunk}");
        await client.ExpectAsync(SmtpReplies.TooBig);
        await client.SendRawAsync("BDAT 5 LAST\r\nhello");
        await client.ExpectAsync(SmtpReplies.BdatAfterError);
        await client.CommandAsync("DATA", 503);
        Assert.Empty(server.Spool.Committed);
        Assert.Equal(1, server.Spool.Discarded);
    }

    [Fact]
    public async Task Data_after_bdat_is_a_bad_sequence()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await RawSmtpClient.GreetedAsync(server.Port);
        await client.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await client.CommandAsync("RCPT TO:<b@local.test>", 250);
        await client.SendRawAsync("BDAT 3\r\nabc");
        await client.ExpectAsync(250);
        await client.CommandAsync("DATA", SmtpReplies.DataAfterBdat);
    }

    [Fact]
    public async Task A_spool_write_failure_answers_452_after_the_data()
    {
        await using var server = await TestServer.StartAsync();
        server.Spool.FailWrites = true;
        await using var client = await InDataAsync(server);
        await client.SendRawAsync("Subject: x\r\n\r\nbody\r\n.\r\n");
        await client.ExpectAsync(SmtpReplies.SpoolFailed);
        await client.CommandAsync("NOOP", SmtpReplies.Ok);
        Assert.Empty(server.Spool.Committed);
    }

    [Fact]
    public async Task Received_header_names_the_client_queue_id_and_single_recipient()
    {
        await using var server = await TestServer.StartAsync();
        await using var client = await InDataAsync(server, "solo@remote.test");
        await client.SendRawAsync("Subject: x\r\n\r\nbody\r\n.\r\n");
        var reply = await client.ExpectAsync(250);
        var stored = server.Spool.Single();
        Assert.EndsWith(stored.Envelope.Id, reply);
        var received = MimeKit.HeaderList.Load(new MemoryStream(stored.Bytes))["Received"];
        Assert.Contains("from client.test (unknown [127.0.0.1])", received);
        Assert.Contains($"by relay.test (Relay) with ESMTP id {stored.Envelope.Id}", received);
        Assert.Contains("for <solo@remote.test>;", received);
        Assert.Equal("client.test", stored.Envelope.HeloName);
    }
}
