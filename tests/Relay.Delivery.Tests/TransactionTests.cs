// One SMTP transaction: per-recipient results, dropped connections, DSN parameters, SMTPUTF8, SIZE, exact bytes.
using System.Security.Cryptography;
using System.Text;
using MimeKit;
using MimeKit.Cryptography;
using Org.BouncyCastle.Crypto;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Delivery.Tests;

public sealed class TransactionTests : IAsyncLifetime
{
    private readonly World _world = new();
    private TestSmtpServer _mx = null!;

    public Task InitializeAsync()
    {
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        _mx = _world.Server("127.0.0.2");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _world.DisposeAsync();

    private static RecipientEntry Rcpt(string address, DsnNotify notify = DsnNotify.Default, string? orcpt = null) =>
        new() { Address = address, Schedule = "default", Queue = "default", Notify = notify, OriginalRecipient = orcpt };

    [Fact]
    public async Task Each_recipient_gets_its_own_result_in_one_transaction()
    {
        _mx.RcptReply = a => a switch
        {
            "bad@remote.test" => "550 5.1.1 <bad@remote.test>: no such user",
            "later@remote.test" => "450 4.2.1 mailbox busy",
            _ => "250 2.1.5 Ok",
        };

        var outcomes = await _world.Agent().DeliverAsync(
            _world.Request("remote.test", World.Message(), "good@remote.test", "bad@remote.test", "later@remote.test", "also@remote.test"), default);

        Assert.Equal([OutcomeKind.Delivered, OutcomeKind.Permanent, OutcomeKind.Temporary, OutcomeKind.Delivered], outcomes.Select(o => o.Kind));
        Assert.Equal((550, "5.1.1"), (outcomes[1].Code, outcomes[1].EnhancedStatus));
        Assert.Contains("no such user", outcomes[1].Text);
        Assert.Contains("RCPT TO", outcomes[1].Text);
        Assert.Equal((450, "4.2.1"), (outcomes[2].Code, outcomes[2].EnhancedStatus));
        Assert.Equal("Ok: queued", outcomes[0].Text);
        var message = Assert.Single(_mx.Messages);
        Assert.Equal(2, message.RcptTo.Count);
        Assert.Equal(1, _mx.Connections);
    }

    [Fact]
    public async Task When_every_recipient_is_refused_each_keeps_its_reply_and_no_data_is_sent()
    {
        _mx.RcptReply = a => a.StartsWith("x") ? "550 5.1.1 unknown" : "452 4.2.2 over quota";

        var outcomes = await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "x@remote.test", "y@remote.test"), default);

        Assert.Equal([OutcomeKind.Permanent, OutcomeKind.Temporary], outcomes.Select(o => o.Kind));
        Assert.Equal(["5.1.1", "4.2.2"], outcomes.Select(o => o.EnhancedStatus));
        Assert.Empty(_mx.Messages);
        Assert.DoesNotContain("DATA", _mx.Commands);
    }

    [Fact]
    public async Task A_5xx_after_data_fails_the_accepted_recipients_permanently()
    {
        _mx.DataReply = "554 5.7.1 message refused as spam";

        var outcome = Assert.Single(await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test"), default));

        Assert.Equal(OutcomeKind.Permanent, outcome.Kind);
        Assert.Equal((554, "5.7.1"), (outcome.Code, outcome.EnhancedStatus));
        Assert.Contains("end of DATA", outcome.Text);
    }

    [Fact]
    public async Task A_rejected_sender_applies_to_every_recipient()
    {
        _mx.MailReply = "451 4.7.1 greylisted, try again";

        var outcomes = await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), "a@remote.test", "b@remote.test"), default);

        Assert.All(outcomes, o => Assert.Equal((OutcomeKind.Temporary, 451, "4.7.1"), (o.Kind, o.Code, o.EnhancedStatus)));
        Assert.All(outcomes, o => Assert.Contains("MAIL FROM", o.Text));
    }

    [Fact]
    public async Task A_connection_dropped_mid_data_is_temporary()
    {
        _mx.DropAfterDataBytes = 40;

        var outcomes = await _world.Agent().DeliverAsync(
            _world.Request("remote.test", World.Message(body: new string('x', 5000) + "\r\n"), "a@remote.test", "b@remote.test"), default);

        Assert.All(outcomes, o => Assert.Equal(OutcomeKind.Temporary, o.Kind));
        Assert.All(outcomes, o => Assert.Equal("4.4.2", o.EnhancedStatus));
        Assert.Contains("lost connection", outcomes[0].Text);
        Assert.Empty(_mx.Messages);
    }

    [Fact]
    public async Task Dsn_parameters_are_passed_on_when_the_server_advertises_dsn()
    {
        _mx.Dsn = true;
        var request = _world.Request("remote.test", World.Message(),
            e => e with { EnvelopeId = "QQ314159", Return = DsnReturn.Headers },
            Rcpt("a@remote.test", DsnNotify.Success | DsnNotify.Failure, "rfc822;a@remote.test"),
            Rcpt("b@remote.test", DsnNotify.Never),
            Rcpt("c@remote.test"));

        var outcomes = await _world.Agent().DeliverAsync(request, default);

        Assert.All(outcomes, o => Assert.Equal(OutcomeKind.Delivered, o.Kind));
        Assert.Contains("MAIL FROM:<sender@origin.test> ENVID=QQ314159 RET=HDRS", _mx.Commands);
        Assert.Contains("RCPT TO:<a@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@remote.test", _mx.Commands);
        Assert.Contains("RCPT TO:<b@remote.test> NOTIFY=NEVER ORCPT=rfc822;b@remote.test", _mx.Commands);
        Assert.Contains("RCPT TO:<c@remote.test>", _mx.Commands);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]   // pipelined: every RCPT is built before the first reply comes back
    public async Task A_client_ORCPT_is_passed_on_unchanged_even_when_it_differs_from_the_recipient(bool pipelining)
    {
        _mx.Dsn = true;
        _mx.Pipelining = pipelining;
        _mx.RcptReply = a => a.StartsWith("b@") ? "550 5.1.1 no such user" : "250 2.1.5 Ok";
        var request = _world.Request("remote.test", World.Message(), e => e,
            Rcpt("a@remote.test", DsnNotify.Success, "rfc822;list-member@origin.test"),
            Rcpt("b@remote.test", DsnNotify.Failure, "rfc822;Old.Name@origin.test"),
            Rcpt("c@remote.test", DsnNotify.Default, "rfc822;c+tag=1@origin.test"),   // ORCPT without NOTIFY
            Rcpt("d@remote.test", DsnNotify.Delay, "rfc822;d@remote.test"));

        var outcomes = await _world.Agent().DeliverAsync(request, default);

        // RFC 3461 §4.2: an ORCPT received MUST be passed on with the identical value (xtext-encoded on the wire).
        Assert.Contains("RCPT TO:<a@remote.test> NOTIFY=SUCCESS ORCPT=rfc822;list-member@origin.test", _mx.Commands);
        Assert.Contains("RCPT TO:<b@remote.test> NOTIFY=FAILURE ORCPT=rfc822;Old.Name@origin.test", _mx.Commands);
        // MailKit sends ORCPT only with NOTIFY: the receiver's default is made explicit for it.
        Assert.Contains("RCPT TO:<c@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;c+2Btag+3D1@origin.test", _mx.Commands);
        Assert.Contains("RCPT TO:<d@remote.test> NOTIFY=DELAY ORCPT=rfc822;d@remote.test", _mx.Commands);
        // Each reply still lands on its own recipient, and the message went to the real recipients.
        Assert.Equal([OutcomeKind.Delivered, OutcomeKind.Permanent, OutcomeKind.Delivered, OutcomeKind.Delivered], outcomes.Select(o => o.Kind));
        Assert.Equal("5.1.1", outcomes[1].EnhancedStatus);
        Assert.Equal(["a@remote.test", "c@remote.test", "d@remote.test"], _mx.Messages.Single().RcptTo.Select(l => l[(l.IndexOf('<') + 1)..l.IndexOf('>')]));
    }

    [Theory]
    [InlineData("rfc822;user(comment)@origin.test", false)]   // MimeKit drops the comment
    [InlineData("rfc822;user@xn--bcher-kva.example", true)]   // MimeKit decodes the A-label for an SMTPUTF8 server
    public async Task An_ORCPT_MailKit_cannot_write_back_exactly_is_never_sent_altered(string orcpt, bool smtpUtf8)
    {
        _mx.Dsn = true;
        _mx.SmtpUtf8 = smtpUtf8;
        var request = _world.Request("remote.test", World.Message(), e => e,
            Rcpt("a@remote.test", DsnNotify.Failure, orcpt),
            Rcpt("b@remote.test", DsnNotify.Default, orcpt));

        var outcomes = await _world.Agent().DeliverAsync(request, default);

        Assert.All(outcomes, o => Assert.Equal(OutcomeKind.Delivered, o.Kind));
        // With NOTIFY, MailKit always adds an ORCPT: its own rfc822;<rcpt>, never a rewritten client value.
        Assert.Contains("RCPT TO:<a@remote.test> NOTIFY=FAILURE ORCPT=rfc822;a@remote.test", _mx.Commands);
        // Without NOTIFY, none is invented for it.
        Assert.Contains("RCPT TO:<b@remote.test>", _mx.Commands);
    }

    [Fact]
    public async Task Dsn_parameters_are_left_out_when_the_server_does_not_advertise_dsn()
    {
        var request = _world.Request("remote.test", World.Message(),
            e => e with { EnvelopeId = "QQ314159", Return = DsnReturn.Full },
            Rcpt("a@remote.test", DsnNotify.Success, "rfc822;a@remote.test"));

        await _world.Agent().DeliverAsync(request, default);

        Assert.Contains("MAIL FROM:<sender@origin.test>", _mx.Commands);
        Assert.Contains("RCPT TO:<a@remote.test>", _mx.Commands);
        Assert.DoesNotContain(_mx.Commands, c => c.Contains("NOTIFY") || c.Contains("ENVID") || c.Contains("RET="));
    }

    [Fact]
    public async Task A_recipient_delivered_to_a_server_without_dsn_is_flagged_for_a_relayed_dsn()
    {
        var outcomes = await _world.Agent().DeliverAsync(
            _world.Request("remote.test", World.Message(), e => e, Rcpt("a@remote.test", DsnNotify.Success), Rcpt("b@remote.test")), default);

        Assert.All(outcomes, o => Assert.Equal(OutcomeKind.Delivered, o.Kind));
        Assert.All(outcomes, o => Assert.True(o.RemoteLacksDsn));
    }

    [Fact]
    public async Task A_recipient_delivered_to_a_server_with_dsn_is_not_flagged()
    {
        _mx.Dsn = true;
        _mx.RcptReply = a => a.StartsWith("bad") ? "550 5.1.1 unknown" : "250 2.1.5 Ok";

        var outcomes = await _world.Agent().DeliverAsync(
            _world.Request("remote.test", World.Message(), e => e, Rcpt("a@remote.test", DsnNotify.Success), Rcpt("bad@remote.test")), default);

        Assert.Equal([OutcomeKind.Delivered, OutcomeKind.Permanent], outcomes.Select(o => o.Kind));
        Assert.All(outcomes, o => Assert.False(o.RemoteLacksDsn));
    }

    [Fact]
    public async Task A_message_that_needs_smtputf8_fails_with_5_6_7_when_the_server_lacks_it()
    {
        var request = _world.Request("remote.test", Encoding.UTF8.GetBytes("Received: by relay\r\nSubject: é\r\n\r\nbody\r\n"),
            e => e with { SmtpUtf8 = true, Sender = "jøran@origin.test" }, Rcpt("a@remote.test"));

        var outcome = Assert.Single(await _world.Agent().DeliverAsync(request, default));

        Assert.Equal((OutcomeKind.Permanent, "5.6.7"), (outcome.Kind, outcome.EnhancedStatus));
        Assert.DoesNotContain(_mx.Commands, c => c.StartsWith("MAIL"));
    }

    [Fact]
    public async Task A_message_that_needs_smtputf8_is_sent_with_it_when_offered()
    {
        _mx.SmtpUtf8 = true;
        var content = Encoding.UTF8.GetBytes("Received: by relay\r\nFrom: Jøran <jøran@origin.test>\r\nSubject: é\r\n\r\nbody é\r\n");
        var request = _world.Request("remote.test", content,
            e => e with { SmtpUtf8 = true, Body = BodyType.EightBitMime, Sender = "jøran@origin.test" }, Rcpt("a@remote.test"));

        var outcome = Assert.Single(await _world.Agent().DeliverAsync(request, default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        var message = Assert.Single(_mx.Messages);
        Assert.StartsWith("MAIL FROM:<jøran@origin.test> SMTPUTF8", message.MailFrom);
        Assert.Contains("BODY=8BITMIME", message.MailFrom);
        Assert.Equal(content, message.Content);
    }

    [Fact]
    public async Task A_message_larger_than_the_servers_size_fails_with_5_3_4()
    {
        _mx.Size = 100;

        var outcome = Assert.Single(await _world.Agent().DeliverAsync(
            _world.Request("remote.test", World.Message(body: new string('y', 500) + "\r\n"), "a@remote.test"), default));

        Assert.Equal((OutcomeKind.Permanent, 552, "5.3.4"), (outcome.Kind, outcome.Code, outcome.EnhancedStatus));
    }

    [Fact]
    public async Task Size_is_declared_when_the_server_advertises_it()
    {
        _mx.Size = 1_000_000;
        var content = World.Message();

        await _world.Agent().DeliverAsync(_world.Request("remote.test", content, "a@remote.test"), default);

        Assert.Contains($"MAIL FROM:<sender@origin.test> SIZE={content.Length}", _mx.Commands);
    }

    [Fact]
    public async Task The_null_sender_is_sent_as_empty_brackets()
    {
        await _world.Agent().DeliverAsync(_world.Request("remote.test", World.Message(), e => e with { Sender = "" }, Rcpt("a@remote.test")), default);

        Assert.Contains("MAIL FROM:<>", _mx.Commands);
    }

    [Fact]
    public async Task The_bytes_delivered_are_exactly_the_spooled_bytes()
    {
        var latin1 = Encoding.Latin1.GetBytes("caf\u00e9 in Latin-1, not UTF-8\r\n");
        var content = Concat(
            "Received: from client.test (client.test [127.0.0.1])\r\n\tby relay.example.test; Mon, 23 Nov 2026 09:00:00 +0000\r\n"u8.ToArray(),
            "From:   \"Odd  Spacing\" <sender@origin.test>\r\nTo: a@remote.test,\r\n   b@remote.test\r\nBcc: hidden@remote.test\r\nContent-Length: 12\r\n"u8.ToArray(),
            "Subject: =?iso-8859-1?q?caf=E9?=\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"u8.ToArray(),
            ".leading dot\r\n..two dots\r\n.\r\n"u8.ToArray(), latin1,
            Encoding.ASCII.GetBytes(new string('L', 1500) + "\r\n"), "trailing spaces   \r\n\r\n\r\nlast line\r\n"u8.ToArray());
        var request = _world.Request("remote.test", content, e => e with { Body = BodyType.EightBitMime }, Rcpt("a@remote.test"));

        var outcome = Assert.Single(await _world.Agent().DeliverAsync(request, default));

        Assert.Equal(OutcomeKind.Delivered, outcome.Kind);
        var message = Assert.Single(_mx.Messages);
        Assert.Equal(content, message.Content);
        Assert.Contains("BODY=8BITMIME", message.MailFrom);
        Assert.Contains("\r\n..leading dot\r\n...two dots\r\n..\r\n", Encoding.Latin1.GetString(message.WireData));
    }

    [Fact]
    public async Task A_message_without_a_final_line_break_gets_one_and_nothing_else_changes()
    {
        var content = "Received: by relay\r\nSubject: x\r\n\r\nno newline at the end"u8.ToArray();

        await _world.Agent().DeliverAsync(_world.Request("remote.test", content, "a@remote.test"), default);

        Assert.Equal(Concat(content, "\r\n"u8.ToArray()), Assert.Single(_mx.Messages).Content);
    }

    [Fact]
    public async Task A_dkim_signature_made_before_relaying_still_verifies_at_the_receiving_end()
    {
        using var rsa = RSA.Create(2048);
        var signer = new DkimSigner(new MemoryStream(Encoding.ASCII.GetBytes(rsa.ExportRSAPrivateKeyPem())), "origin.test", "sel1",
                                    DkimSignatureAlgorithm.RsaSha256)
        {
            HeaderCanonicalizationAlgorithm = DkimCanonicalizationAlgorithm.Relaxed,
            BodyCanonicalizationAlgorithm = DkimCanonicalizationAlgorithm.Simple,
        };
        var original = new MimeMessage();
        original.From.Add(new MailboxAddress("Sender", "sender@origin.test"));
        original.To.Add(new MailboxAddress("Rcpt", "a@remote.test"));
        original.Subject = "signed ünïcödé subject";
        var builder = new BodyBuilder { TextBody = "Signed body.\r\n.a line with a leading dot\r\n", HtmlBody = "<p>Signed <b>html</b> ✓</p>" };
        original.Body = builder.ToMessageBody();
        var crlf = FormatOptions.Default.Clone();
        crlf.NewLineFormat = NewLineFormat.Dos;
        original.Prepare(EncodingConstraint.EightBit);   // fix the transfer encodings before signing (MimeKit's advice)
        signer.Sign(crlf, original, [HeaderId.From, HeaderId.To, HeaderId.Subject, HeaderId.Date, HeaderId.MessageId, HeaderId.MimeVersion, HeaderId.ContentType]);
        var signed = new MemoryStream();
        original.WriteTo(crlf, signed);
        // What the spool holds: our Received: header on top of the bytes as submitted.
        var spooled = Concat("Received: from app.test by relay.example.test with ESMTP id M0001;\r\n\tMon, 23 Nov 2026 09:00:00 +0000\r\n"u8.ToArray(), signed.ToArray());

        await _world.Agent().DeliverAsync(_world.Request("remote.test", spooled, e => e with { Body = BodyType.EightBitMime }, Rcpt("a@remote.test")), default);

        var verifier = new DkimVerifier(new SingleKeyLocator(rsa));
        var before = MimeMessage.Load(new MemoryStream(signed.ToArray()));
        Assert.True(await verifier.VerifyAsync(before, before.Headers[before.Headers.IndexOf(HeaderId.DkimSignature)]), "signed as submitted");
        var received = MimeMessage.Load(new MemoryStream(Assert.Single(_mx.Messages).Content));
        var signature = received.Headers[received.Headers.IndexOf(HeaderId.DkimSignature)];
        Assert.True(await verifier.VerifyAsync(received, signature));
        Assert.Equal(spooled, _mx.Messages.Single().Content);
    }

    [Fact]
    public async Task Bytes_that_cannot_be_relayed_unchanged_fail_permanently_instead_of_being_altered()
    {
        var outcome = Assert.Single(await _world.Agent().DeliverAsync(
            _world.Request("remote.test", "this first line is not a header\r\n\r\nbody\r\n"u8.ToArray(), "a@remote.test"), default));

        Assert.Equal((OutcomeKind.Permanent, "5.6.0"), (outcome.Kind, outcome.EnhancedStatus));
        Assert.Empty(_mx.Messages);
    }

    private static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    private sealed class SingleKeyLocator(RSA rsa) : DkimPublicKeyLocatorBase
    {
        private AsymmetricKeyParameter Key() => GetPublicKey($"v=DKIM1; k=rsa; p={Convert.ToBase64String(rsa.ExportSubjectPublicKeyInfo())}");
        public override AsymmetricKeyParameter LocatePublicKey(string methods, string domain, string selector, CancellationToken cancellationToken = default) => Key();
        public override Task<AsymmetricKeyParameter> LocatePublicKeyAsync(string methods, string domain, string selector, CancellationToken cancellationToken = default) => Task.FromResult(Key());
    }
}
