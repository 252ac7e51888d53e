// RFC 3461 NOTIFY and the no-loop rules: NEVER means none, default is FAILURE,DELAY, and nothing is ever
// sent about a message from <> (so a DSN that fails is dropped and logged, never bounced).
using Relay.Scheduler;
using Relay.Spool;
using static Relay.Dsn.Tests.DsnHarness;

namespace Relay.Dsn.Tests;

public sealed class NotifyRulesTests : IAsyncLifetime
{
    private static readonly DeliveryError Rejected = new(550, "5.1.1", "550 5.1.1 unknown user", "mx.remote.test");
    private static readonly DeliveryError Busy = new(450, "4.2.1", "450 4.2.1 busy", "mx.remote.test");
    private readonly DsnHarness _h = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _h.DisposeAsync();

    private static ReportedRecipient Pending(MessageEnvelope e, int i) =>
        new(i, e.Recipients[i], RecipientStatus.Pending, Busy, 1, Now.AddMinutes(5), Arrived.AddDays(5));

    [Theory]
    [InlineData(DsnNotify.Default, DsnKind.Failure, true)]
    [InlineData(DsnNotify.Default, DsnKind.Delay, true)]
    [InlineData(DsnNotify.Default, DsnKind.Success, false)]
    [InlineData(DsnNotify.Never, DsnKind.Failure, false)]
    [InlineData(DsnNotify.Never, DsnKind.Delay, false)]
    [InlineData(DsnNotify.Never, DsnKind.Success, false)]
    [InlineData(DsnNotify.Success, DsnKind.Success, true)]
    [InlineData(DsnNotify.Success, DsnKind.Failure, false)]
    [InlineData(DsnNotify.Success, DsnKind.Delay, false)]
    [InlineData(DsnNotify.Failure, DsnKind.Delay, false)]
    [InlineData(DsnNotify.Delay, DsnKind.Delay, true)]
    [InlineData(DsnNotify.Success | DsnNotify.Failure | DsnNotify.Delay, DsnKind.Delay, true)]
    public void Notify_decides_which_dsns_a_recipient_gets(DsnNotify notify, DsnKind kind, bool wanted) =>
        Assert.Equal(wanted, DsnPlanner.Wants(notify, kind));

    [Fact]
    public async Task Notify_never_gets_no_failure_and_no_delay_dsn()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", DsnNotify.Never)]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, Rejected)), default);
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(), Pending(envelope, 0)), default);
        Assert.Empty(await _h.CommittedAsync());
    }

    [Fact]
    public async Task Notify_success_alone_gets_no_failure_dsn()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", DsnNotify.Success)]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Expired,
            new DeliveryError(0, "4.4.7", "delivery time expired (5.00:00:00)", null))), default);
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(), Pending(envelope, 0)), default);
        Assert.Empty(await _h.CommittedAsync());
    }

    [Fact]
    public async Task Notify_failure_alone_gets_no_delay_dsn()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", DsnNotify.Failure)]);
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(), Pending(envelope, 0)), default);
        Assert.Empty(await _h.CommittedAsync());
    }

    [Fact]
    public async Task Default_notify_gets_no_success_dsn()
    {
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Delivered, null)), default);
        Assert.Empty(await _h.CommittedAsync());
    }

    [Fact]
    public async Task Recipients_that_opted_out_are_left_out_of_a_shared_dsn()
    {
        var envelope = Envelope([Rcpt("a@remote.test"), Rcpt("b@remote.test", DsnNotify.Never), Rcpt("c@remote.test", DsnNotify.Delay)]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Failed, Rejected), Final(envelope, 1, RecipientStatus.Failed, Rejected),
            Final(envelope, 2, RecipientStatus.Failed, Rejected)), default);

        var dsn = await _h.SingleAsync();
        Assert.Equal(1, dsn.RecipientGroups);
        Assert.Equal("rfc822; a@remote.test", dsn.Recipient(0)["Final-Recipient"]);
    }

    [Fact]
    public async Task A_message_from_the_null_sender_never_gets_a_dsn()
    {
        var envelope = Envelope([Rcpt("bob@remote.test", DsnNotify.Success | DsnNotify.Failure | DsnNotify.Delay)], sender: "");
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, Rejected)), default);
        await _h.Sender.DelayedAsync(Report(envelope, OriginalMessage(), Pending(envelope, 0)), default);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Delivered, null)), default);
        Assert.Empty(await _h.CommittedAsync());
    }

    [Fact]
    public async Task A_dsn_that_fails_is_dropped_and_logged_never_bounced()
    {
        // What the scheduler reports when one of our own DSNs (sender <>, source dsn) is refused for good.
        var dsnEnvelope = Envelope([Rcpt("alice@example.test", DsnNotify.Never)], sender: "", source: "dsn");
        await _h.Sender.RecipientsFinalAsync(Report(dsnEnvelope, OriginalMessage(),
            Final(dsnEnvelope, 0, RecipientStatus.Failed, new DeliveryError(550, "5.1.1", "550 5.1.1 no such sender", "mx.example.test"))), default);

        Assert.Empty(await _h.CommittedAsync());
        var line = Assert.Single(_h.Log.Lines, l => l.Id.Id == 5002);
        Assert.Contains("alice@example.test", line.Text);
        Assert.Contains("(dsn)", line.Text);
        Assert.Contains("550 5.1.1 no such sender", line.Text);
    }
}
