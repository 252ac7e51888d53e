// Drives the server with MailKit's SmtpClient: the client applications will use.
using MailKit;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;
using Relay.Config.Settings;
using Relay.Inbound.Tests.Harness;
using Relay.Spool;

namespace Relay.Inbound.Tests;

public sealed class MailKitTests
{
    private static MimeMessage Message(string to = "bob@remote.test", string subject = "hello", string from = "alice@local.test")
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(from));
        message.To.Add(MailboxAddress.Parse(to));
        message.Subject = subject;
        message.Body = new TextPart("plain") { Text = "Hi Bob,\n.\n..leading dots survive\nbye\n" };
        return message;
    }

    private static async Task<SmtpClient> ConnectAsync(TestServer server, SecureSocketOptions options = SecureSocketOptions.None, SmtpClient? client = null)
    {
        client ??= new SmtpClient();
        client.CheckCertificateRevocation = false;
        client.ServerCertificateValidationCallback = (_, _, _, _) => true;
        await client.ConnectAsync("127.0.0.1", server.Port, options);
        return client;
    }

    [Fact]
    public async Task A_plain_message_is_stored_byte_for_byte_after_our_trace_header()
    {
        await using var server = await TestServer.StartAsync();
        using var client = await ConnectAsync(server);
        var message = Message();
        var original = new MemoryStream();
        var crlf = FormatOptions.Default.Clone();
        crlf.NewLineFormat = NewLineFormat.Dos;
        await message.WriteToAsync(crlf, original);

        var reply = await client.SendAsync(message);

        var stored = server.Spool.Single();
        Assert.Contains($"queued as {stored.Envelope.Id}", reply);
        Assert.StartsWith("Received: from ", stored.Text);
        Assert.Contains($"with ESMTP id {stored.Envelope.Id}", stored.Text);
        Assert.Contains("for <bob@remote.test>;", stored.Text);
        var body = original.ToArray();
        Assert.True(stored.Bytes.AsSpan().EndsWith(body), "original bytes must follow our header unchanged");
        Assert.Contains("\r\n..leading dots survive\r\n", stored.Text); // MailKit stuffed it to "...", we unstuffed
        Assert.Equal("alice@local.test", stored.Envelope.Sender);
        Assert.Equal("bob@remote.test", Assert.Single(stored.Envelope.Recipients).Address);
        Assert.Equal("default", stored.Envelope.Recipients[0].Schedule);
        Assert.Equal("default-q", stored.Envelope.Recipients[0].Queue);
        Assert.Equal("smtp", stored.Envelope.Source);
        Assert.Equal("127.0.0.1", stored.Envelope.RemoteIp);
        Assert.Equal("smtp", stored.Envelope.Listener);
        Assert.Equal(stored.Bytes.Length, stored.Envelope.Size);
        await client.DisconnectAsync(true);
    }

    [Fact]
    public async Task The_server_advertises_every_extension_of_the_spec()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(null, TestSettings.Listener(tls: true)));
        using var client = await ConnectAsync(server);
        var caps = client.Capabilities;
        Assert.True(caps.HasFlag(SmtpCapabilities.Pipelining));
        Assert.True(caps.HasFlag(SmtpCapabilities.Size));
        Assert.Equal(server.Settings.Session.MaxMessageSize, (long)client.MaxSize);
        Assert.True(caps.HasFlag(SmtpCapabilities.EightBitMime));
        Assert.True(caps.HasFlag(SmtpCapabilities.UTF8));
        Assert.True(caps.HasFlag(SmtpCapabilities.EnhancedStatusCodes));
        Assert.True(caps.HasFlag(SmtpCapabilities.Dsn));
        Assert.True(caps.HasFlag(SmtpCapabilities.Chunking));
        Assert.True(caps.HasFlag(SmtpCapabilities.StartTLS));
        await using var raw = await server.ConnectAsync();
        await raw.ExpectAsync(220);
        await raw.SendAsync("EHLO c.test");
        var ehlo = await raw.ReadReplyAsync();
        Assert.Contains("250-MT-PRIORITY", ehlo);
        Assert.DoesNotContain(ehlo, l => l.Contains("AUTH")); // no users configured
    }

    [Fact]
    public async Task StartTls_with_a_generated_certificate_gives_ESMTPS()
    {
        await using var server = await TestServer.StartAsync(TestSettings.Create(null, TestSettings.Listener(tls: true)));
        using var client = await ConnectAsync(server, SecureSocketOptions.StartTls);
        Assert.True(client.IsSecure);

        await client.SendAsync(Message());

        var stored = server.Spool.Single();
        Assert.Contains("with ESMTPS id", stored.Text);
        Assert.Contains("(using Tls", stored.Text);
    }

    [Fact]
    public async Task Implicit_tls_listener_serves_smtp_inside_tls()
    {
        var listener = TestSettings.Listener("smtps", implicitTls: true);
        await using var server = await TestServer.StartAsync(TestSettings.Create(null, listener));
        using var client = await ConnectAsync(server, SecureSocketOptions.SslOnConnect);
        Assert.True(client.IsSecure);
        await client.SendAsync(Message());
        var stored = server.Spool.Single();
        Assert.Contains("with ESMTPS id", stored.Text);
        Assert.Equal("smtps", stored.Envelope.Listener);
    }

    [Theory]
    [InlineData("PLAIN")]
    [InlineData("LOGIN")]
    public async Task Auth_lets_a_client_outside_relay_networks_relay(string mechanism)
    {
        var session = new SessionSettings
        {
            Relay = new RelayControlSettings
            {
                Networks = [], // loopback is not trusted here, so only AUTH opens the relay
                Users = new Dictionary<string, string> { ["app1"] = "s3cret", ["app2"] = Policy.SecretVerifier.Hash("hashed", 1000) },
            },
        };
        await using var server = await TestServer.StartAsync(TestSettings.Create(session));
        using var client = await ConnectAsync(server);
        Assert.True(client.AuthenticationMechanisms.Contains(mechanism));

        var refused = await Assert.ThrowsAsync<SmtpCommandException>(() => client.SendAsync(Message()));
        Assert.Equal(SmtpErrorCode.RecipientNotAccepted, refused.ErrorCode);
        Assert.Equal(554, (int)refused.StatusCode);

        client.AuthenticationMechanisms.Clear();
        client.AuthenticationMechanisms.Add(mechanism);
        await Assert.ThrowsAsync<AuthenticationException>(() => client.AuthenticateAsync("app1", "wrong"));
        await client.AuthenticateAsync("app2", "hashed");
        await client.SendAsync(Message());

        var stored = server.Spool.Single();
        Assert.Equal("app2", stored.Envelope.AuthenticatedAs);
        Assert.Contains("with ESMTPA id", stored.Text);
    }

    [Fact]
    public async Task Require_auth_listener_refuses_mail_until_authenticated()
    {
        var session = new SessionSettings { Relay = new RelayControlSettings { Users = new Dictionary<string, string> { ["app1"] = "s3cret" } } };
        await using var server = await TestServer.StartAsync(TestSettings.Create(session, TestSettings.Listener("submission", requireAuth: true)));
        using var client = await ConnectAsync(server);
        var refused = await Assert.ThrowsAsync<ServiceNotAuthenticatedException>(() => client.SendAsync(Message())); // MailKit's name for 530
        Assert.StartsWith("5.7.0", refused.Message);

        await client.AuthenticateAsync("app1", "s3cret");
        await client.SendAsync(Message());
        Assert.Single(server.Spool.Committed);
    }

    [Fact]
    public async Task Chunking_with_BDAT_stores_the_same_bytes_as_DATA()
    {
        await using var server = await TestServer.StartAsync();
        using var data = await ConnectAsync(server);
        using var bdat = await ConnectAsync(server, client: new BdatSmtpClient());
        var message = Message();

        await data.SendAsync(message);
        await bdat.SendAsync(message);

        var both = server.Spool.Committed.ToArray();
        Assert.Equal(2, both.Length);
        Assert.Equal(Body(both[0]), Body(both[1]));
        Assert.Contains("\r\n..leading dots survive\r\n", both[1].Text); // BDAT is not dot-stuffed

        static string Body(StoredMessage m) => m.Text[m.Text.IndexOf("From:", StringComparison.Ordinal)..];
    }

    [Fact]
    public async Task Pipelined_transactions_are_answered_in_order()
    {
        await using var server = await TestServer.StartAsync();
        using var client = await ConnectAsync(server);
        Assert.True(client.Capabilities.HasFlag(SmtpCapabilities.Pipelining));
        var message = Message();
        message.To.Add(MailboxAddress.Parse("carol@remote.test"));
        message.To.Add(MailboxAddress.Parse("dave@local.test"));

        for (var i = 0; i < 5; i++)
        {
            await client.SendAsync(message);
        }

        Assert.Equal(5, server.Spool.Committed.Count);
        Assert.All(server.Spool.Committed, m => Assert.Equal(3, m.Envelope.Recipients.Count));
        Assert.DoesNotContain("\tfor <", server.Spool.Committed.First().Text); // several recipients: no "for"
    }

    [Fact]
    public async Task SmtpUtf8_addresses_and_headers_are_accepted()
    {
        await using var server = await TestServer.StartAsync();
        using var client = await ConnectAsync(server);
        Assert.True(client.Capabilities.HasFlag(SmtpCapabilities.UTF8));
        var message = Message(to: "jörg@bücher.test", from: "andré@local.test", subject: "Grüße");

        await client.SendAsync(FormatOptions.Default, message);

        var stored = server.Spool.Single();
        Assert.True(stored.Envelope.SmtpUtf8);
        Assert.Equal("andré@local.test", stored.Envelope.Sender);
        Assert.Equal("jörg@bücher.test", stored.Envelope.Recipients[0].Address);
        Assert.Contains("with UTF8SMTP id", stored.Text);
    }

    [Fact]
    public async Task Dsn_parameters_reach_the_envelope()
    {
        await using var server = await TestServer.StartAsync();
        using var client = await ConnectAsync(server, client: new DsnSmtpClient());
        client.DeliveryStatusNotificationType = DeliveryStatusNotificationType.HeadersOnly;

        await client.SendAsync(Message());

        var envelope = server.Spool.Single().Envelope;
        Assert.Equal("env-42+x", envelope.EnvelopeId);
        Assert.Equal(DsnReturn.Headers, envelope.Return);
        var rcpt = Assert.Single(envelope.Recipients);
        Assert.Equal(DsnNotify.Failure | DsnNotify.Delay, rcpt.Notify);
        Assert.Equal("rfc822;bob@remote.test", rcpt.OriginalRecipient); // MailKit 4.18.2 derives ORCPT (private hook)
    }

    [Fact]
    public async Task A_spool_that_cannot_commit_gets_452_and_nothing_is_queued()
    {
        await using var server = await TestServer.StartAsync();
        server.Spool.FailCommits = true;
        using var client = await ConnectAsync(server);

        var error = await Assert.ThrowsAsync<SmtpCommandException>(() => client.SendAsync(Message()));

        Assert.Equal(452, (int)error.StatusCode);
        Assert.Empty(server.Spool.Committed);
        Assert.Equal(1, server.Spool.Discarded);
    }

    [Fact]
    public async Task The_250_waits_for_the_commit()
    {
        await using var server = await TestServer.StartAsync();
        server.Spool.CommitGate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var client = await ConnectAsync(server);

        var send = client.SendAsync(Message());
        var first = await Task.WhenAny(send, Task.Delay(TimeSpan.FromMilliseconds(300)));

        Assert.NotSame(send, first);
        Assert.Empty(server.Spool.Committed);
        server.Spool.CommitGate.SetResult();
        await send;
        Assert.Single(server.Spool.Committed);
    }

    /// <summary>Forces BDAT even for 7-bit messages.</summary>
    private sealed class BdatSmtpClient : SmtpClient
    {
        protected override bool PreferSendAsBinaryData => true;
    }

    /// <summary>ENVID and NOTIFY through MailKit's protected hooks; ORCPT comes with NOTIFY (GetOriginalRecipientAddress is private in 4.18.2).</summary>
    private sealed class DsnSmtpClient : SmtpClient
    {
        protected override string GetEnvelopeId(MimeMessage message) => "env-42+x";

        protected override DeliveryStatusNotification? GetDeliveryStatusNotifications(MimeMessage message, MailboxAddress mailbox) =>
            DeliveryStatusNotification.Failure | DeliveryStatusNotification.Delay;

    }
}
