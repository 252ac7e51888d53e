// DSNs enter the spool like any message: from <>, source "dsn", one recipient (the original sender), on the
// schedule the strategy picks; one log line each; a repeated final report does not send the DSN again.
using Relay.Scheduler;
using Relay.Spool;
using static Relay.Dsn.Tests.DsnHarness;

namespace Relay.Dsn.Tests;

public sealed class DsnQueueingTests : IAsyncLifetime
{
    private static readonly DeliveryError Rejected = new(550, "5.1.1", "550 5.1.1 unknown user", "mx.remote.test");
    private readonly DsnHarness _h = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task A_dsn_is_queued_from_the_null_sender_with_source_dsn_on_the_strategys_schedule()
    {
        // Priority 7 would pick 'urgent'; a DSN is routed by its source, not by the original's priority.
        var envelope = Envelope([Rcpt("bob@remote.test")]) with { Priority = 7, SmtpUtf8 = false };
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, Rejected)), default);

        var dsn = await _h.SingleAsync();
        var e = dsn.Envelope;
        Assert.Equal("", e.Sender);
        Assert.Equal("dsn", e.Source);
        Assert.Equal(0, e.Priority);
        Assert.Equal(Now, e.ArrivedAt);
        Assert.Equal(dsn.Bytes.Length, e.Size);
        var rcpt = Assert.Single(e.Recipients);
        Assert.Equal("alice@example.test", rcpt.Address);
        Assert.Equal("bounces", rcpt.Schedule);
        Assert.Equal("dsn-queue", rcpt.Queue);
        Assert.Equal(DsnNotify.Never, rcpt.Notify);
        Assert.Contains(e.Id, dsn.Message.MessageId);

        var state = _h.Spool.Find(e.Id)!.GetRecipient(0);
        Assert.Equal(RecipientStatus.Pending, state.Status);
        Assert.Equal("dsn-queue", state.Queue);
        Assert.Equal("example.test", state.Domain);
    }

    [Fact]
    public async Task The_schedule_is_whatever_the_strategy_says_for_source_dsn()
    {
        const string config = """
            [queue.strategy]
            schedule = [ { if = "source == 'dsn' && rcpt_domain == 'example.test' && size > 100", then = "'notices'" },
                         { else = "'default'" } ]
            [queue.schedule.default]
            queue-name = "default"
            [queue.schedule.notices]
            queue-name = "notices"
            [queue.virtual.default]
            [queue.virtual.notices]
            """;
        await using var h = new DsnHarness(config: config);
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        await h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, Rejected)), default);

        var rcpt = Assert.Single((await h.SingleAsync()).Envelope.Recipients);
        Assert.Equal("notices", rcpt.Schedule);
        Assert.Equal("notices", rcpt.Queue);
    }

    [Fact]
    public async Task Every_dsn_sent_is_logged_once()
    {
        var both = DsnNotify.Success | DsnNotify.Failure;
        var envelope = Envelope([Rcpt("bob@remote.test", both), Rcpt("carol@remote.test", both)]);
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Delivered, null), Final(envelope, 1, RecipientStatus.Failed, Rejected)), default);

        var dsns = await _h.CommittedAsync();
        var sent = _h.Log.Lines.Where(l => l.Id.Id == 5001).ToList();
        Assert.Equal(2, sent.Count);
        foreach (var d in dsns) Assert.Single(sent, l => l.Text.Contains(d.Envelope.Id));
        Assert.All(sent, l => Assert.StartsWith(OriginalId + ": ", l.Text));
        Assert.Contains(sent, l => l.Text.Contains("failure") && l.Text.Contains("carol@remote.test") && l.Text.Contains("queue=dsn-queue"));
    }

    [Fact]
    public async Task A_repeated_final_report_does_not_send_the_same_dsn_twice()
    {
        var envelope = Envelope([Rcpt("bob@remote.test"), Rcpt("carol@remote.test")]);
        var report = Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, Rejected));
        await _h.Sender.RecipientsFinalAsync(report, default);
        await _h.Sender.RecipientsFinalAsync(report, default);   // the scheduler retries after a failure to record "reported"
        Assert.Single(await _h.CommittedAsync());

        // A later final report about another recipient of the same message is new.
        await _h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, Rejected),
            Final(envelope, 1, RecipientStatus.Failed, Rejected)), default);
        var second = await _h.SingleAsync();
        Assert.Equal(1, second.RecipientGroups);
        Assert.Equal("rfc822; carol@remote.test", second.Recipient(0)["Final-Recipient"]);
    }

    [Fact]
    public async Task A_spool_that_cannot_store_the_dsn_throws_so_the_scheduler_retries()
    {
        var spool = new FailingSpool();
        var sender = new DsnSender(spool, _h.Settings, _h.Clock, _h.Log);
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var report = Report(envelope, OriginalMessage(), Final(envelope, 0, RecipientStatus.Failed, Rejected));

        await Assert.ThrowsAsync<SpoolWriteException>(async () => await sender.RecipientsFinalAsync(report, default));
        Assert.Contains(_h.Log.Lines, l => l.Id.Id == 5005);

        // Not remembered as sent: the retry queues it once the spool works again.
        spool.Broken = false;
        await sender.RecipientsFinalAsync(report, default);
        Assert.Equal(1, spool.Commits);
    }

    /// <summary>The other side of the boundary: a spool whose disk is full until told otherwise.</summary>
    private sealed class FailingSpool : IMessageSpool
    {
        public bool Broken { get; set; } = true;
        public int Commits { get; private set; }

        public IIncomingMessage Begin() => new Incoming(this);

        private sealed class Incoming(FailingSpool owner) : IIncomingMessage
        {
            public string Id { get; } = "00000000000dead0";
            public long Length { get; private set; }

            public ValueTask WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken = default)
            {
                if (owner.Broken) throw new SpoolWriteException("no space left on device");
                Length += bytes.Length;
                return ValueTask.CompletedTask;
            }

            public Task CommitAsync(MessageEnvelope envelope, CancellationToken cancellationToken = default)
            {
                owner.Commits++;
                return Task.CompletedTask;
            }

            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }
}
