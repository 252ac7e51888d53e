// Delay notices (one per DelayedAsync, Will-Retry-Until) and success reports (only with NOTIFY=SUCCESS).
using MimeKit;
using MimeKit.Utils;
using Relay.Scheduler;
using Relay.Spool;
using static Relay.Dsn.Tests.DsnHarness;

namespace Relay.Dsn.Tests;

public sealed class DelayAndSuccessDsnTests : IAsyncLifetime
{
    private readonly DsnHarness _h = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task A_delay_notice_says_until_when_the_relay_keeps_trying()
    {
        var envelope = Envelope([Rcpt("bob@remote.test"), Rcpt("carol@remote.test")]);
        var next = Now.AddMinutes(10);
        var until = Arrived.AddDays(5);
        var report = Report(envelope, OriginalMessage(),
            new ReportedRecipient(0, envelope.Recipients[0], RecipientStatus.Pending,
                new DeliveryError(450, "4.2.1", "450 4.2.1 mailbox temporarily unavailable", "mx1.remote.test"), 3, next, until),
            new ReportedRecipient(1, envelope.Recipients[1], RecipientStatus.Pending, null, 0, null, until));
        await _h.Sender.DelayedAsync(report, default);

        var dsn = await _h.SingleAsync();
        Assert.Equal("Delayed Mail (still being retried)", dsn.Message.Subject);
        Assert.Equal("auto-replied", dsn.Message.Headers["Auto-Submitted"]);
        Assert.Equal($"dns; {Hostname}", dsn.PerMessage["Reporting-MTA"]);
        Assert.Equal(2, dsn.RecipientGroups);

        var bob = dsn.Recipient(0);
        Assert.Equal("delayed", bob["Action"]);
        Assert.Equal("4.2.1", bob["Status"]);
        Assert.Equal("dns; mx1.remote.test", bob["Remote-MTA"]);
        Assert.Equal("smtp; 450 4.2.1 mailbox temporarily unavailable", FailureDsnTests.Unfold(bob["Diagnostic-Code"]));
        Assert.True(DateUtils.TryParse(bob["Will-Retry-Until"], out var willRetryUntil));
        Assert.Equal(until, willRetryUntil);
        // After attempt 3 the default schedule waits retry[2] = 10m, so the last attempt was 10m before the next one.
        Assert.True(DateUtils.TryParse(bob["Last-Attempt-Date"], out var lastAttempt));
        Assert.Equal(next - _h.DefaultSchedule.RetryDelay(3), lastAttempt);

        var carol = dsn.Recipient(1);   // not tried yet: no remote, no diagnostic, no attempt date
        Assert.Equal("delayed", carol["Action"]);
        Assert.Equal("4.0.0", carol["Status"]);
        Assert.Null(carol["Remote-MTA"]);
        Assert.Null(carol["Diagnostic-Code"]);
        Assert.Null(carol["Last-Attempt-Date"]);
        Assert.NotNull(carol["Will-Retry-Until"]);

        Assert.Contains("still trying", dsn.Human.Text);
        Assert.Contains(DateUtils.FormatDate(until), dsn.Human.Text);
        // Delay notices return headers only, whatever RET says (RET is about failed DSNs).
        Assert.Equal("text/rfc822-headers", dsn.Report[2].ContentType.MimeType);
    }

    [Fact]
    public async Task A_delay_under_max_attempts_has_no_will_retry_until()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(),
            new ReportedRecipient(0, envelope.Recipients[0], RecipientStatus.Pending,
                new DeliveryError(421, "4.4.2", "421 4.4.2 closing", "mx1.remote.test"), 1, Now.AddMinutes(2), null)), default);

        var r = (await _h.SingleAsync()).Recipient(0);
        Assert.Equal("delayed", r["Action"]);
        Assert.Null(r["Will-Retry-Until"]);
    }

    [Fact]
    public async Task Each_delay_report_sends_its_own_notice()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var pending = new ReportedRecipient(0, envelope.Recipients[0], RecipientStatus.Pending, null, 0, null, Arrived.AddDays(5));
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(), pending), default);   // notify[0] = 1d
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(), pending), default);   // notify[1] = 3d

        Assert.Equal(2, (await _h.CommittedAsync()).Count);
    }

    [Fact]
    public async Task Success_is_reported_only_when_notify_success_asked_for_it()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", DsnNotify.Success | DsnNotify.Failure), Rcpt("carol@remote.test")]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Delivered, new DeliveryError(451, "4.3.0", "451 4.3.0 an earlier attempt", "old.remote.test"), 2),
            Final(envelope, 1, RecipientStatus.Delivered, null)), default);

        var dsn = await _h.SingleAsync();
        Assert.Equal("Successful Mail Delivery Report", dsn.Message.Subject);
        Assert.Equal(1, dsn.RecipientGroups);
        var r = dsn.Recipient(0);
        Assert.Equal("rfc822; bob@remote.test", r["Final-Recipient"]);
        Assert.Equal("delivered", r["Action"]);
        Assert.Equal("2.0.0", r["Status"]);
        // The earlier temporary error is not this delivery's reply: it must not appear.
        Assert.Null(r["Diagnostic-Code"]);
        Assert.Null(r["Remote-MTA"]);
        Assert.NotNull(r["Last-Attempt-Date"]);
        Assert.DoesNotContain("carol", dsn.Human.Text);
        Assert.Equal("text/rfc822-headers", dsn.Report[2].ContentType.MimeType);
    }

    [Fact]
    public async Task Failure_and_success_in_one_report_make_two_dsns()
    {
        var both = DsnNotify.Success | DsnNotify.Failure;
        var envelope = Envelope([Rcpt("bob@remote.test", both), Rcpt("carol@remote.test", both)]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Delivered, null),
            Final(envelope, 1, RecipientStatus.Failed, new DeliveryError(550, "5.1.1", "550 5.1.1 unknown", "mx.remote.test"))), default);

        var dsns = await _h.CommittedAsync();
        Assert.Equal(2, dsns.Count);
        Assert.Single(dsns, d => d.Recipient(0)["Action"] == "failed" && d.Recipient(0)["Final-Recipient"] == "rfc822; carol@remote.test");
        Assert.Single(dsns, d => d.Recipient(0)["Action"] == "delivered" && d.Recipient(0)["Final-Recipient"] == "rfc822; bob@remote.test");
    }
}
