// Failure DSNs: permanent 5xx, TTL expiry (4.4.7) and max-attempts expiry, with every RFC 3464 field
// checked on the message parsed back from the spool.
using MimeKit;
using MimeKit.Utils;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;
using static Relay.Dsn.Tests.DsnHarness;

namespace Relay.Dsn.Tests;

public sealed class FailureDsnTests : IAsyncLifetime
{
    private readonly DsnHarness _h = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task A_permanent_5xx_produces_a_failure_report_with_every_field()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var error = new DeliveryError(550, "5.1.1", "550 5.1.1 <bob@remote.test>: no such user here", "mx1.remote.test");
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, error)), default);

        var dsn = await _h.SingleAsync();
        var m = dsn.Message;
        Assert.Equal("Mail Delivery System", Assert.IsType<MailboxAddress>(Assert.Single(m.From)).Name);
        Assert.Equal($"MAILER-DAEMON@{Hostname}", ((MailboxAddress)m.From[0]).Address);
        Assert.Equal("alice@example.test", ((MailboxAddress)Assert.Single(m.To)).Address);
        Assert.Equal("auto-replied", m.Headers["Auto-Submitted"]);
        Assert.Equal("Undelivered Mail Returned to Sender", m.Subject);
        Assert.Equal(Now, m.Date);
        Assert.EndsWith($".dsn@{Hostname}", m.MessageId);
        Assert.Equal("orig-1@example.test", m.InReplyTo);

        Assert.Equal("multipart/report", dsn.Report.ContentType.MimeType);
        Assert.Equal("delivery-status", dsn.Report.ReportType);
        Assert.Equal(3, dsn.Report.Count);
        Assert.Equal("message/delivery-status", dsn.Status.ContentType.MimeType);

        Assert.Equal($"dns; {Hostname}", dsn.PerMessage["Reporting-MTA"]);
        Assert.Equal(Arrived, DateUtils.TryParse(dsn.PerMessage["Arrival-Date"], out var arrival) ? arrival : default);
        Assert.Null(dsn.PerMessage["Original-Envelope-Id"]);

        Assert.Equal(1, dsn.RecipientGroups);
        var r = dsn.Recipient(0);
        Assert.Equal("rfc822; bob@remote.test", r["Final-Recipient"]);
        Assert.Null(r["Original-Recipient"]);
        Assert.Equal("failed", r["Action"]);
        Assert.Equal("5.1.1", r["Status"]);
        Assert.Equal("dns; mx1.remote.test", r["Remote-MTA"]);
        Assert.Equal("smtp; 550 5.1.1 <bob@remote.test>: no such user here", Unfold(r["Diagnostic-Code"]));
        Assert.True(DateUtils.TryParse(r["Last-Attempt-Date"], out var lastAttempt));
        Assert.Equal(Now, lastAttempt);
        Assert.Null(r["Will-Retry-Until"]);

        Assert.Contains("<bob@remote.test>: host mx1.remote.test said: 550 5.1.1 <bob@remote.test>: no such user here", dsn.Human.Text);
        var returned = Assert.IsType<MessagePart>(dsn.Report[2]);
        Assert.Equal("message/rfc822", returned.ContentType.MimeType);
        Assert.Equal("Quarterly figures", returned.Message?.Subject);
        Assert.Contains("BODY-MARKER", returned.Message?.TextBody ?? "");
    }

    [Fact]
    public async Task A_reply_without_its_code_in_the_text_gets_the_code_and_status_in_the_diagnostic()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var error = new DeliveryError(554, "5.7.1", "rejected by policy\r\nsee https://remote.test/policy", "mx1.remote.test");
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, error)), default);

        var r = (await _h.SingleAsync()).Recipient(0);
        Assert.Equal("smtp; 554 5.7.1 rejected by policy see https://remote.test/policy", Unfold(r["Diagnostic-Code"]));
    }

    [Fact]
    public async Task A_recipient_past_its_ttl_fails_with_4_4_7()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var waiting = new RecipientState("remote.test", "default", "default", RecipientStatus.Pending, 4, Now.AddMinutes(5),
            new DeliveryError(451, "4.3.0", "451 4.3.0 try again later", "mx1.remote.test"), 3, false);
        var change = RecipientPolicy.Expire(0, waiting, _h.DefaultSchedule);   // the scheduler's own expiry rule
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            new ReportedRecipient(0, envelope.Recipients[0], change.Status, change.LastError, change.Attempts, null, null)), default);

        var dsn = await _h.SingleAsync();
        var r = dsn.Recipient(0);
        Assert.Equal("failed", r["Action"]);
        Assert.Equal("4.4.7", r["Status"]);
        Assert.Equal("dns; mx1.remote.test", r["Remote-MTA"]);
        var diagnostic = Unfold(r["Diagnostic-Code"]);
        Assert.StartsWith("X-Relay; delivery time expired", diagnostic);
        Assert.Contains("451 4.3.0 try again later", diagnostic);
        Assert.Contains("delivery time expired", dsn.Human.Text);
        Assert.Equal("Undelivered Mail Returned to Sender", dsn.Message.Subject);
    }

    [Fact]
    public async Task A_recipient_out_of_attempts_fails_with_its_last_errors_status()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var schedule = _h.DefaultSchedule with { Expiry = new Expiry.Attempts(3) };
        var before = new RecipientState("remote.test", "default", "default", RecipientStatus.Pending, 2, Now, null, 0, false);
        var change = RecipientPolicy.AfterAttempt(0, before,
            RecipientOutcome.Temporary("bob@remote.test", 452, "4.2.2", "452 4.2.2 mailbox full", "mx2.remote.test"),
            schedule, Arrived, Now);
        Assert.Equal(RecipientStatus.Expired, change.Status);

        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            new ReportedRecipient(0, envelope.Recipients[0], change.Status, change.LastError, change.Attempts, null, null)), default);

        var r = (await _h.SingleAsync()).Recipient(0);
        Assert.Equal("failed", r["Action"]);
        Assert.Equal("4.2.2", r["Status"]);
        Assert.Equal("dns; mx2.remote.test", r["Remote-MTA"]);
        Assert.Equal("smtp; 452 4.2.2 mailbox full", Unfold(r["Diagnostic-Code"]));
    }

    [Fact]
    public async Task An_error_without_a_reply_is_reported_as_the_relays_own_diagnostic()
    {
        var envelope = Envelope([Rcpt("bob@nowhere.test")]);
        var error = new DeliveryError(0, "5.1.2", "domain nowhere.test does not exist (NXDOMAIN)", null);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, error)), default);

        var r = (await _h.SingleAsync()).Recipient(0);
        Assert.Equal("5.1.2", r["Status"]);
        Assert.Null(r["Remote-MTA"]);
        Assert.Equal("X-Relay; domain nowhere.test does not exist (NXDOMAIN)", Unfold(r["Diagnostic-Code"]));
    }

    [Fact]
    public async Task Several_recipients_reaching_the_same_outcome_share_one_dsn()
    {
        var envelope = Envelope([Rcpt("a@remote.test"), Rcpt("b@remote.test"), Rcpt("c@other.test"), Rcpt("d@remote.test")]);
        var report = Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Failed, new DeliveryError(550, "5.1.1", "550 5.1.1 unknown a", "mx.remote.test")),
            Final(envelope, 1, RecipientStatus.Failed, new DeliveryError(550, "5.1.1", "550 5.1.1 unknown b", "mx.remote.test")),
            Final(envelope, 2, RecipientStatus.Expired, new DeliveryError(0, "4.4.7", "delivery time expired (5.00:00:00)", null)),
            Final(envelope, 3, RecipientStatus.Delivered, null));
        await _h.Sender.RecipientsFinalAsync(report, default);

        var dsn = await _h.SingleAsync();   // d was delivered and did not ask for SUCCESS: no second DSN
        Assert.Equal(3, dsn.RecipientGroups);
        Assert.Equal(["rfc822; a@remote.test", "rfc822; b@remote.test", "rfc822; c@other.test"],
                     Enumerable.Range(0, 3).Select(i => dsn.Recipient(i)["Final-Recipient"]));
        Assert.All(Enumerable.Range(0, 3), i => Assert.Equal("failed", dsn.Recipient(i)["Action"]));
        Assert.Equal("4.4.7", dsn.Recipient(2)["Status"]);
        Assert.Contains("<a@remote.test>:", dsn.Human.Text);
        Assert.Contains("<c@other.test>:", dsn.Human.Text);
        Assert.DoesNotContain("d@remote.test", dsn.Human.Text);
    }

    [Fact]
    public async Task Envid_and_orcpt_are_echoed()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", orcpt: "rfc822;Bob.Original@remote.test")], envid: "QQ314159-app7");
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Failed, new DeliveryError(550, "5.1.1", "550 5.1.1 no", "mx.remote.test"))), default);

        var dsn = await _h.SingleAsync();
        Assert.Equal("QQ314159-app7", dsn.PerMessage["Original-Envelope-Id"]);
        Assert.Equal("rfc822;Bob.Original@remote.test", dsn.Recipient(0)["Original-Recipient"]);
        Assert.Equal("rfc822; bob@remote.test", dsn.Recipient(0)["Final-Recipient"]);
        Assert.Equal(OriginalId, dsn.PerMessage["X-Relay-Queue-ID"]);
    }

    [Fact]
    public async Task The_stored_dsn_uses_crlf_line_ends_only()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Failed, new DeliveryError(550, "5.1.1", "550 5.1.1 no", "mx.remote.test"))), default);

        var bytes = (await _h.SingleAsync()).Bytes;
        for (var i = 0; i < bytes.Length; i++)
        {
            if (bytes[i] == (byte)'\n') Assert.True(i > 0 && bytes[i - 1] == (byte)'\r', $"bare LF at byte {i}");
        }
    }

    internal static string? Unfold(string? value) => value is null ? null : string.Join(' ',
        value.Split([' ', '\t', '\r', '\n'], StringSplitOptions.RemoveEmptyEntries));
}
