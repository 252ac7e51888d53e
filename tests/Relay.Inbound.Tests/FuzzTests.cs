// Fuzz: thousands of random and mutated command lines at one server. It must never crash, never
// hang (every read has a deadline), answer every line with exactly one valid reply, and then still
// serve a new session.
using System.Text;
using Relay.Config.Settings;
using Relay.Inbound.Tests.Harness;

namespace Relay.Inbound.Tests;

public sealed class FuzzTests
{
    private static readonly string[] Corpus =
    [
        "EHLO client.test", "HELO client.test", "EHLO [127.0.0.1]",
        "MAIL FROM:<a@local.test>", "MAIL FROM:<>", "MAIL FROM:<a@local.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=abc+2B MT-PRIORITY=3",
        "MAIL FROM:<jörg@local.test> SMTPUTF8", "MAIL FROM:<\"quoted local\"@local.test>", "MAIL FROM:<@r.test:a@local.test> AUTH=<>",
        "RCPT TO:<b@local.test>", "RCPT TO:<c@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@remote.test", "RCPT TO:<Postmaster>",
        "RCPT TO:<b%x@local.test>", "RCPT TO:<x!y@local.test>", "RCPT TO:<b@[192.0.2.1]>", "RCPT TO:<b@[IPv6:::1]>",
        "DATA", "RSET", "NOOP", "NOOP hello", "VRFY bob", "EXPN list", "HELP", "QUIT",
        "AUTH PLAIN AGFwcDEAczNjcmV0", "AUTH LOGIN", "AUTH LOGIN YXBwMQ==", "AUTH PLAIN", "STARTTLS",
    ];

    private const string Alphabet = "abcXYZ019 <>:@\"\\%!=+,;[]().-_/*'`~{}|^&$#?\u00e9\u00fc\u4e2d\r\0\t";

    [Fact]
    public async Task Thousands_of_mutated_lines_each_get_one_valid_reply_and_the_server_survives()
    {
        var session = new SessionSettings
        {
            MaxErrors = 200,
            MaxMessageSize = 4096,
            MaxRecipients = 5,
            Relay = new RelayControlSettings { Users = new Dictionary<string, string> { ["app1"] = "s3cret" } },
        };
        await using var server = await TestServer.StartAsync(TestSettings.Create(session));
        var random = new Random(20261123);
        var client = await RawSmtpClient.ConnectAsync(server.Port);
        await client.ExpectAsync(220);
        var reconnects = 0;
        var replies = 0;
        var codes = new HashSet<int>();

        for (var i = 0; i < 4000; i++)
        {
            var line = Mutate(random, Corpus[random.Next(Corpus.Length)]);
            var isBdat = line.StartsWith("BDAT", StringComparison.OrdinalIgnoreCase);
            if (isBdat || random.Next(40) == 0)
            {
                // A BDAT with its chunk, so the server's byte count and ours agree.
                var chunk = RandomText(random, random.Next(0, 300));
                var bytes = Encoding.UTF8.GetBytes(chunk);
                line = $"BDAT {bytes.Length}{(random.Next(3) == 0 ? " LAST" : "")}";
                await client.SendRawAsync([.. Encoding.UTF8.GetBytes(line + "\r\n"), .. bytes]);
            }
            else
            {
                await client.SendRawAsync(Encoding.UTF8.GetBytes(line + "\r\n"));
            }

            var reply = await ReadCheckedAsync(client, line);
            replies++;
            codes.Add(reply);
            switch (reply)
            {
                case 354:
                    var body = ("\r\n" + RandomText(random, random.Next(0, 2000))).Replace("\r\n.", "\r\n..")[2..];
                    await client.SendRawAsync(body + "\r\n.\r\n");
                    reply = await ReadCheckedAsync(client, "<end of data>");
                    break;
                case 334:
                    await client.SendAsync(random.Next(2) == 0 ? "*" : Mutate(random, "czNjcmV0"));
                    reply = await ReadCheckedAsync(client, "<sasl>");
                    break;
            }

            if (reply is 221 or 421)
            {
                Assert.True(await client.IsClosedAsync(), $"server sent {reply} but kept the connection open");
                await client.DisposeAsync();
                client = await RawSmtpClient.ConnectAsync(server.Port);
                await client.ExpectAsync(220);
                reconnects++;
            }
        }

        await client.DisposeAsync();
        Assert.True(replies >= 4000);
        Assert.Superset(new HashSet<int> { 214, 221, 250, 252, 334, 354, 500, 501, 503, 553, 555 }, codes);
        Assert.True(reconnects > 0, "QUIT is in the corpus, so some sessions must have ended");

        await using var next = await RawSmtpClient.GreetedAsync(server.Port);
        await next.CommandAsync("MAIL FROM:<a@local.test>", 250);
        await next.CommandAsync("RCPT TO:<b@local.test>", 250);
        await next.CommandAsync("DATA", 354);
        await next.SendRawAsync("Subject: after the fuzz\r\n\r\nstill here\r\n.\r\n");
        await next.ExpectAsync(250);
        Assert.Contains(server.Spool.Committed, m => m.Text.Contains("after the fuzz"));
    }

    [Fact]
    public async Task Random_bytes_get_only_valid_reply_lines_and_the_next_session_works()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(new SessionSettings { MaxErrors = 50 }));
        var random = new Random(4);
        for (var round = 0; round < 20; round++)
        {
            await using var client = await RawSmtpClient.ConnectAsync(server.Port);
            await client.ExpectAsync(220);
            var garbage = new byte[random.Next(1, 20_000)];
            random.NextBytes(garbage);
            try
            {
                await client.SendRawAsync(garbage);
                await client.SendRawAsync("\r\n.\r\nQUIT\r\n");
            }
            catch (IOException)
            {
                // The server may have given up on us first (421 after too many errors).
            }

            // Every line up to the close must be a valid reply line.
            while (await ReadLineOrCloseAsync(client) is { } line)
            {
                Assert.Matches(RawSmtpClient.ReplyLine(), line);
            }
        }

        await using var next = await RawSmtpClient.GreetedAsync(server.Port);
        await next.CommandAsync("NOOP", SmtpReplies.Ok);
    }

    private static async Task<string?> ReadLineOrCloseAsync(RawSmtpClient client)
    {
        try
        {
            return await client.ReadLineAsync();
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static async Task<int> ReadCheckedAsync(RawSmtpClient client, string sent)
    {
        var lines = await client.ReadReplyAsync(); // throws on timeout: a hang fails the test
        var last = lines[^1];
        var code = int.Parse(last[..3]);
        if (code is not (220 or 334 or 354) && !(lines.Count > 1 || last.Contains(" Hello ")))
        {
            Assert.True(RawSmtpClient.EnhancedReply().IsMatch(last), $"no enhanced code in '{last}' (sent '{sent}')");
        }

        return code;
    }

    private static string Mutate(Random random, string line)
    {
        var chars = new StringBuilder(line);
        var mutations = random.Next(0, 4);
        for (var m = 0; m < mutations; m++)
        {
            var at = chars.Length == 0 ? 0 : random.Next(chars.Length);
            switch (random.Next(7))
            {
                case 0 when chars.Length > 0:
                    chars[at] = Alphabet[random.Next(Alphabet.Length)];
                    break;
                case 1:
                    chars.Insert(at, Alphabet[random.Next(Alphabet.Length)]);
                    break;
                case 2 when chars.Length > 0:
                    chars.Remove(at, Math.Min(chars.Length - at, random.Next(1, 6)));
                    break;
                case 3:
                    chars.Length = Math.Min(chars.Length, at);
                    break;
                case 4:
                    chars.Insert(at, new string(Alphabet[random.Next(Alphabet.Length)], random.Next(1, 700)));
                    break;
                case 5:
                    chars.Append(' ').Append(RandomText(random, random.Next(1, 40)));
                    break;
                default:
                    chars = new StringBuilder(random.Next(2) == 0 ? chars.ToString().ToLowerInvariant() : chars.ToString().ToUpperInvariant());
                    break;
            }
        }

        // One line per send: LF would split it into several commands (tested on its own elsewhere).
        return chars.ToString().Replace('\n', ' ');
    }

    private static string RandomText(Random random, int length)
    {
        var text = new StringBuilder(length);
        for (var i = 0; i < length; i++)
        {
            text.Append(random.Next(10) == 0 ? "\r\n" : Alphabet[random.Next(Alphabet.Length)].ToString());
        }

        return text.ToString();
    }
}
