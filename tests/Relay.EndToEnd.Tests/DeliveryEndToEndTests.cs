using System.Security.Cryptography;
using System.Text;
using MailKit.Net.Smtp;
using MimeKit;
using MimeKit.Cryptography;
using Org.BouncyCastle.Crypto;

namespace Relay.EndToEnd.Tests;

/// <summary>SMTP in → spool → scheduler → MX lookup → SMTP out, and DSNs back to the sender's MX.</summary>
public sealed class DeliveryEndToEndTests : IAsyncLifetime
{
    private readonly RelayWorld _world = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _world.DisposeAsync();

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_message_submitted_with_MailKit_arrives_byte_for_byte_and_its_DKIM_signature_verifies()
    {
        var mx = _world.Remote("127.0.0.2");
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        await _world.StartAsync();

        using var rsa = RSA.Create(2048);
        var message = SignedMessage(rsa);
        var crlf = FormatOptions.Default.Clone();
        crlf.NewLineFormat = NewLineFormat.Dos;
        var submitted = new MemoryStream();
        message.WriteTo(crlf, submitted);

        var self = MimeMessage.Load(new MemoryStream(submitted.ToArray()));
        Assert.True(await new DkimVerifier(new SingleKeyLocator(rsa)).VerifyAsync(self, self.Headers[self.Headers.IndexOf(HeaderId.DkimSignature)]), "signed message does not verify before sending");
        using (var client = new SmtpClient())
        {
            await client.ConnectAsync("127.0.0.1", _world.SmtpPort, MailKit.Security.SecureSocketOptions.None);
            await client.SendAsync(crlf, message);
            await client.DisconnectAsync(true);
        }

        await RelayWorld.WaitUntil(() => !mx.Messages.IsEmpty, Patience, "delivery to mx.remote.test");
        var received = Assert.Single(mx.Messages);
        Assert.StartsWith("MAIL FROM:<sender@origin.test>", received.MailFrom);
        Assert.StartsWith("RCPT TO:<a@remote.test>", Assert.Single(received.RcptTo));

        // Exactly our Received: header on top of the submitted bytes, nothing else changed.
        var text = Encoding.UTF8.GetString(received.Content);
        Assert.StartsWith("Received: from ", text);
        var original = submitted.ToArray();
        var bodyStart = received.Content.Length - original.Length;
        Assert.True(bodyStart > 0);
        Assert.Equal(original, received.Content[bodyStart..]);
        Assert.DoesNotContain("\r\nReceived:", Encoding.UTF8.GetString(received.Content[..bodyStart]).TrimEnd('\r', '\n'));

        var delivered = MimeMessage.Load(new MemoryStream(received.Content));
        var verifier = new DkimVerifier(new SingleKeyLocator(rsa));
        var signature = delivered.Headers[delivered.Headers.IndexOf(HeaderId.DkimSignature)];
        Assert.True(await verifier.VerifyAsync(delivered, signature), "DKIM signature no longer verifies:\n" + text[..Math.Min(text.Length, 1500)]);
    }

    [Fact]
    public async Task A_550_from_the_recipients_MX_sends_a_DSN_to_the_senders_MX_with_the_remote_text()
    {
        var recipientMx = _world.Remote("127.0.0.2");
        recipientMx.RcptReply = _ => "550 5.1.1 <gone@remote.test>: mailbox unavailable here";
        var senderMx = _world.Remote("127.0.0.3");
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2")
                  .Mx("origin.test", (10, "mx.origin.test")).Address("mx.origin.test", "127.0.0.3");
        await _world.StartAsync();

        var message = new MimeMessage();
        message.From.Add(new MailboxAddress("Sender", "sender@origin.test"));
        message.To.Add(new MailboxAddress("Gone", "gone@remote.test"));
        message.Subject = "are you there";
        message.Body = new TextPart("plain") { Text = "Hello?\r\n" };
        using (var client = new SmtpClient())
        {
            await client.ConnectAsync("127.0.0.1", _world.SmtpPort, MailKit.Security.SecureSocketOptions.None);
            await client.SendAsync(message);
            await client.DisconnectAsync(true);
        }

        await RelayWorld.WaitUntil(() => !senderMx.Messages.IsEmpty, Patience, "the DSN at mx.origin.test");
        var dsn = Assert.Single(senderMx.Messages);
        Assert.StartsWith("MAIL FROM:<>", dsn.MailFrom);
        Assert.StartsWith("RCPT TO:<sender@origin.test>", Assert.Single(dsn.RcptTo));
        var parsed = MimeMessage.Load(new MemoryStream(dsn.Content));
        var report = Assert.IsType<MultipartReport>(parsed.Body);
        Assert.Equal("delivery-status", report.ReportType);
        var status = report.OfType<MessageDeliveryStatus>().Single();
        var recipientGroup = status.StatusGroups.Skip(1).First(g => g.Count > 0);
        Assert.Equal("failed", recipientGroup["Action"]);
        Assert.Equal("5.1.1", recipientGroup["Status"]);
        Assert.Contains("mailbox unavailable here", recipientGroup["Diagnostic-Code"]);
        Assert.Contains("rfc822;gone@remote.test", recipientGroup["Final-Recipient"]!.Replace(" ", ""));
        Assert.Empty(recipientMx.Messages);
    }

    private static MimeMessage SignedMessage(RSA rsa)
    {
        var signer = new DkimSigner(new MemoryStream(Encoding.ASCII.GetBytes(rsa.ExportRSAPrivateKeyPem())), "origin.test", "sel1",
            DkimSignatureAlgorithm.RsaSha256)
        {
            HeaderCanonicalizationAlgorithm = DkimCanonicalizationAlgorithm.Relaxed,
            BodyCanonicalizationAlgorithm = DkimCanonicalizationAlgorithm.Simple,
        };
        var message = new MimeMessage();
        message.From.Add(new MailboxAddress("Sender", "sender@origin.test"));
        message.To.Add(new MailboxAddress("Rcpt", "a@remote.test"));
        message.Subject = "signed ünïcödé subject";
        message.Body = new BodyBuilder { TextBody = "Signed body.\r\n.a line with a leading dot\r\n", HtmlBody = "<p>Signed <b>html</b> ✓</p>" }.ToMessageBody();
        var crlf = FormatOptions.Default.Clone();
        crlf.NewLineFormat = NewLineFormat.Dos;
        // MIME-Version/Content-Type stay out of h=: MimeKit 4.18.2 finalises them after hashing in this
        // build-then-sign flow, so the signature would not verify even before sending.
        signer.Sign(crlf, message, [HeaderId.From, HeaderId.To, HeaderId.Subject, HeaderId.Date, HeaderId.MessageId]);
        return message;
    }

    private sealed class SingleKeyLocator(RSA rsa) : DkimPublicKeyLocatorBase
    {
        private AsymmetricKeyParameter Key() => GetPublicKey($"v=DKIM1; k=rsa; p={Convert.ToBase64String(rsa.ExportSubjectPublicKeyInfo())}");
        public override AsymmetricKeyParameter LocatePublicKey(string methods, string domain, string selector, CancellationToken cancellationToken = default) => Key();
        public override Task<AsymmetricKeyParameter> LocatePublicKeyAsync(string methods, string domain, string selector, CancellationToken cancellationToken = default) => Task.FromResult(Key());
    }
}
