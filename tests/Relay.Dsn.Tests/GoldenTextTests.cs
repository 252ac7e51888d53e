// Pins the exact message/delivery-status text of one failure DSN (TestData/), so a change in field order,
// spelling or folding shows up as a diff.
using System.Text;
using Relay.Scheduler;
using Relay.Spool;
using static Relay.Dsn.Tests.DsnHarness;

namespace Relay.Dsn.Tests;

public sealed class GoldenTextTests
{
    [Fact]
    public async Task The_delivery_status_of_a_failure_matches_the_expected_text()
    {
        await using var h = new DsnHarness();
        var envelope = Envelope([Rcpt("bob@remote.test", orcpt: "rfc822;Bob.Original@remote.test"), Rcpt("carol@remote.test")],
                                envid: "QQ314159-app7");
        var expired = RecipientPolicy.Expire(1,
            new RecipientState("remote.test", "default", "default", RecipientStatus.Pending, 5, Now,
                new DeliveryError(451, "4.3.0", "451 4.3.0 try again later", "mx1.remote.test"), 3, false), h.DefaultSchedule);
        await h.Sender.RecipientsFinalAsync(Report(envelope, OriginalMessage(),
            Final(envelope, 0, RecipientStatus.Failed, new DeliveryError(550, "5.1.1", "550 5.1.1 <bob@remote.test>: no such user here", "mx1.remote.test")),
            new ReportedRecipient(1, envelope.Recipients[1], expired.Status, expired.LastError, expired.Attempts, null, null)), default);

        var dsn = await h.SingleAsync();
        using var content = new MemoryStream();
        dsn.Status.Content!.DecodeTo(content);
        var actual = Encoding.ASCII.GetString(content.ToArray());
        Assert.DoesNotContain("\n", actual.Replace("\r\n", ""));   // CRLF only
        var expected = await File.ReadAllTextAsync(Path.Combine(AppContext.BaseDirectory, "TestData", "permanent-failure.delivery-status.txt"));
        Assert.Equal(expected.Replace("\r\n", "\n"), actual.Replace("\r\n", "\n"));
    }
}
