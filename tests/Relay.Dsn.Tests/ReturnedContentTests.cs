// What of the original comes back: RET=FULL → message/rfc822, RET=HDRS → text/rfc822-headers, no RET → whole
// message up to DsnOptions.FullReturnLimit, headers above it.
using MimeKit;
using Relay.Spool;
using static Relay.Dsn.Tests.DsnHarness;

namespace Relay.Dsn.Tests;

public sealed class ReturnedContentTests
{
    private static readonly DeliveryError Rejected = new(550, "5.1.1", "550 5.1.1 unknown user", "mx.remote.test");

    private static async Task<QueuedDsn> FailAsync(DsnHarness h, DsnReturn ret, byte[] content, BodyType body = BodyType.Unspecified)
    {
        var envelope = Envelope([Rcpt("bob@remote.test")], ret: ret, size: content.Length) with { Body = body };
        await h.Sender.RecipientsFinalAsync(Report(envelope, content, Final(envelope, 0, RecipientStatus.Failed, Rejected)), default);
        return await h.SingleAsync();
    }

    private static void AssertFull(QueuedDsn dsn)
    {
        var part = Assert.IsType<MessagePart>(dsn.Report[2]);
        Assert.Equal("message/rfc822", part.ContentType.MimeType);
        Assert.Equal("Quarterly figures", part.Message?.Subject);
        Assert.Contains("BODY-MARKER", part.Message?.TextBody ?? "");
        Assert.Contains("your original message are attached", dsn.Human.Text);
    }

    private static void AssertHeadersOnly(QueuedDsn dsn)
    {
        var part = Assert.IsType<TextRfc822Headers>(dsn.Report[2]);
        Assert.Equal("text/rfc822-headers", part.ContentType.MimeType);
        Assert.Equal("Quarterly figures", part.Message?.Headers["Subject"]);
        Assert.Equal("<orig-1@example.test>", part.Message?.Headers["Message-ID"]);
        Assert.DoesNotContain("BODY-MARKER", System.Text.Encoding.ASCII.GetString(dsn.Bytes));
        Assert.Contains("headers of your message are attached", dsn.Human.Text);
    }

    [Fact]
    public async Task Ret_full_returns_the_whole_message()
    {
        await using var h = new DsnHarness();
        AssertFull(await FailAsync(h, DsnReturn.Full, OriginalMessage()));
    }

    [Fact]
    public async Task Ret_hdrs_returns_only_the_headers()
    {
        await using var h = new DsnHarness();
        AssertHeadersOnly(await FailAsync(h, DsnReturn.Headers, OriginalMessage()));
    }

    [Fact]
    public async Task Without_ret_a_small_message_comes_back_whole()
    {
        await using var h = new DsnHarness();
        AssertFull(await FailAsync(h, DsnReturn.Unspecified, OriginalMessage(bodySize: 2_000)));
    }

    [Fact]
    public async Task Without_ret_a_message_above_the_limit_comes_back_as_headers()
    {
        await using var h = new DsnHarness();
        var large = OriginalMessage(bodySize: 60 * 1024);
        Assert.True(large.Length > new DsnOptions().FullReturnLimit);
        AssertHeadersOnly(await FailAsync(h, DsnReturn.Unspecified, large));
    }

    [Fact]
    public async Task The_size_limit_is_configurable()
    {
        await using var h = new DsnHarness(new DsnOptions { FullReturnLimit = 1024 });
        AssertHeadersOnly(await FailAsync(h, DsnReturn.Unspecified, OriginalMessage(bodySize: 2_000)));
    }

    [Fact]
    public async Task Ret_full_is_honoured_above_the_limit()
    {
        await using var h = new DsnHarness();
        AssertFull(await FailAsync(h, DsnReturn.Full, OriginalMessage(bodySize: 60 * 1024)));
    }

    [Fact]
    public async Task A_binarymime_original_comes_back_as_headers_even_with_ret_full()
    {
        await using var h = new DsnHarness();
        AssertHeadersOnly(await FailAsync(h, DsnReturn.Full, OriginalMessage(), BodyType.BinaryMime));
    }

    [Fact]
    public async Task An_unreadable_original_still_gives_the_sender_a_dsn_without_it()
    {
        await using var h = new DsnHarness();
        var envelope = Envelope([Rcpt("bob@remote.test")]);
        var report = new Relay.Scheduler.DeliveryReport(envelope.Id, envelope,
            [Final(envelope, 0, RecipientStatus.Failed, Rejected)],
            _ => throw new SpoolCorruptException("message file missing"));
        await h.Sender.RecipientsFinalAsync(report, default);

        var dsn = await h.SingleAsync();
        Assert.Equal(2, dsn.Report.Count);
        Assert.Equal("failed", dsn.Recipient(0)["Action"]);
        Assert.Contains("could not be read back", dsn.Human.Text);
        Assert.Contains(h.Log.Lines, l => l.Id.Id == 5003);
    }
}
