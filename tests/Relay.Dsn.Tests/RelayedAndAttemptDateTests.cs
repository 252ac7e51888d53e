// Issue 7: "Action: relayed" when the next hop did not offer DSN, and Last-Attempt-Date from the real attempt time.
using MimeKit.Utils;
using Relay.Scheduler;
using Relay.Spool;
using static Relay.Dsn.Tests.DsnHarness;

namespace Relay.Dsn.Tests;

public sealed class RelayedAndAttemptDateTests : IAsyncLifetime
{
    private readonly DsnHarness _h = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task A_success_is_relayed_when_the_next_hop_lacked_dsn_and_delivered_otherwise_with_the_exact_attempt_time()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", DsnNotify.Success), Rcpt("carol@other.test", DsnNotify.Success)]);
        var bobAttempt = new DateTimeOffset(2026, 11, 23, 9, 57, 12, TimeSpan.Zero);
        var carolAttempt = new DateTimeOffset(2026, 11, 23, 9, 58, 41, TimeSpan.Zero);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Delivered, null) with { Relayed = true, LastAttemptAt = bobAttempt },
            Final(envelope, 1, RecipientStatus.Delivered, null) with { LastAttemptAt = carolAttempt }), default);

        var dsn = await _h.SingleAsync();
        Assert.Equal(2, dsn.RecipientGroups);
        var bob = dsn.Recipient(0);
        Assert.Equal("rfc822; bob@remote.test", bob["Final-Recipient"]);
        Assert.Equal("relayed", bob["Action"]);
        Assert.Equal("2.0.0", bob["Status"]);
        Assert.Equal(DateUtils.FormatDate(bobAttempt), bob["Last-Attempt-Date"]);
        var carol = dsn.Recipient(1);
        Assert.Equal("delivered", carol["Action"]);
        Assert.Equal(DateUtils.FormatDate(carolAttempt), carol["Last-Attempt-Date"]);
        Assert.Contains("<bob@remote.test>: relayed to a server that does not send delivery notifications", dsn.Human.Text);
        Assert.Contains("<carol@other.test>: delivered", dsn.Human.Text);
    }

    [Fact]
    public async Task Without_the_flag_or_an_attempt_time_a_success_says_delivered_at_the_report_time()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", DsnNotify.Success)]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Delivered, null)), default);

        var bob = (await _h.SingleAsync()).Recipient(0);
        Assert.Equal("delivered", bob["Action"]);
        Assert.Equal(DateUtils.FormatDate(_h.Clock.GetUtcNow()), bob["Last-Attempt-Date"]);
    }

    [Fact]
    public async Task An_expired_recipient_reports_its_last_attempt_not_the_expiry_time()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var lastAttempt = Now.AddMinutes(-40);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Expired,
                new DeliveryError(451, RecipientPolicy.ExpiredStatus, "delivery time expired (5.00:00:00); last error: 451 greylisted", "mx.remote.test"), 7)
                with { LastAttemptAt = lastAttempt }), default);

        var bob = (await _h.SingleAsync()).Recipient(0);
        Assert.Equal("failed", bob["Action"]);
        Assert.Equal(DateUtils.FormatDate(lastAttempt), bob["Last-Attempt-Date"]);
    }

    [Fact]
    public async Task A_delay_notice_uses_the_reported_attempt_time_over_the_derived_one()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var lastAttempt = Now.AddMinutes(-3);   // e.g. an operator's forced retry: not next − retry interval
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(),
            new ReportedRecipient(0, envelope.Recipients[0], RecipientStatus.Pending,
                new DeliveryError(450, "4.2.1", "450 4.2.1 busy", "mx1.remote.test"), 3, Now.AddMinutes(10), Arrived.AddDays(5))
                { LastAttemptAt = lastAttempt }), default);

        var bob = (await _h.SingleAsync()).Recipient(0);
        Assert.Equal("delayed", bob["Action"]);
        Assert.Equal(DateUtils.FormatDate(lastAttempt), bob["Last-Attempt-Date"]);
    }
}
