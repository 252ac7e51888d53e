// Inline bodies under damage and failure: the defects review 3 found (each test failed before its fix).
using Microsoft.Extensions.Time.Testing;

namespace Relay.Spool.Tests;

public sealed class InlineBodyFailureTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly FakeTimeProvider _clock = new(Harness.Epoch);
    private string Root => Path.Combine(_dir.Path, "spool");
    private string Journal => Path.Combine(Root, "journal");

    public void Dispose() => _dir.Dispose();

    private FileSpool Open() => FileSpool.Open(Root, new FileSpoolOptions(), _clock);

    private async Task<(string Id, byte[] Bytes)> Commit(FileSpool spool, int size = 300)
    {
        await using var m = spool.Begin();
        var bytes = Messages.Body(m.Id, size);
        await m.WriteAsync(bytes);
        await m.CommitAsync(new MessageEnvelope
        {
            Id = m.Id,
            Sender = "sender@example.test",
            ArrivedAt = _clock.GetUtcNow(),
            Recipients = [new RecipientEntry { Address = "a@x.test", Schedule = "default", Queue = "default" }],
        });
        return (m.Id, bytes);
    }

    private static async Task<byte[]> Content(FileSpool spool, string id)
    {
        await using var content = await spool.OpenContentAsync(id, default);
        using var copy = new MemoryStream();
        await content.CopyToAsync(copy);
        return copy.ToArray();
    }

    [Fact]
    public async Task A_removed_inline_message_is_not_resurrected_when_its_Message_record_is_damaged()
    {
        string id;
        await using (var spool = Open())
        {
            (id, _) = await Commit(spool);
            Assert.True(await spool.SettleAsync(id, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true)], default));
            Assert.Equal(0, spool.Count);   // delivered, Remove record durable
        }
        // One damaged record: the Message record of the (already removed) message.
        var seg = Directory.EnumerateFiles(Journal, "*.log").Order().Last();
        File.WriteAllBytes(seg, Damage(File.ReadAllBytes(seg), RecordTypeMessage));

        await using var reopened = Open();
        Assert.Null(reopened.Find(id));   // its Remove is in the journal: the body left behind is not lost mail
        Assert.Equal(0, reopened.Count);
    }

    [Fact]
    public async Task A_live_inline_message_whose_Message_record_is_damaged_keeps_its_later_state()
    {
        string delivered, pending;
        await using (var spool = Open())
        {
            (delivered, _) = await Commit(spool);
            (pending, _) = await Commit(spool);
            // One recipient of each: delivered but not yet reported / still pending with an attempt made.
            await spool.UpdateRecipientsAsync(delivered, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, false)], default);
            await spool.UpdateRecipientsAsync(pending, [new RecipientChange(0, RecipientStatus.Pending, 2, _clock.GetUtcNow().AddMinutes(9), null, 0, false)], default);
        }
        var seg = Directory.EnumerateFiles(Journal, "*.log").Order().Last();
        File.WriteAllBytes(seg, Damage(File.ReadAllBytes(seg), RecordTypeMessage));   // both Message records

        await using var reopened = Open();
        var d = reopened.Find(delivered)!.GetRecipient(0);
        Assert.Equal(RecipientStatus.Delivered, d.Status);   // never sent again
        var p = reopened.Find(pending)!.GetRecipient(0);
        Assert.Equal((RecipientStatus.Pending, 2), (p.Status, p.Attempts));
        Assert.Equal(1, reopened.CountPending("default"));
    }

    private const byte RecordTypeMessage = 1;

    /// <summary>Flips the last byte of every record of <paramref name="type"/> in a segment image (their CRCs fail).</summary>
    private static byte[] Damage(byte[] bytes, byte type)
    {
        for (var pos = 16; pos + 8 <= bytes.Length;)
        {
            var len = BitConverter.ToInt32(bytes, pos);
            if (len <= 0 || pos + 8 + len > bytes.Length) break;
            if (bytes[pos + 8] == type) bytes[pos + 8 + len - 1] ^= 0xFF;
            pos += 8 + len;
        }
        return bytes;
    }

    [Fact]
    public async Task A_failed_segment_open_at_the_snapshot_point_changes_nothing_and_loses_no_body()
    {
        string id;
        byte[] body;
        await using (var spool = Open())
        {
            await Commit(spool);                                  // segment 1
            var blocker = Path.Combine(Journal, "000000000003.log");
            Directory.CreateDirectory(blocker);                   // stands in for any failure to create segment N+2 (EMFILE, ENOSPC...)
            spool.RequestCompaction();
            (id, body) = await Commit(spool);                     // before or after the failed compaction: acknowledged either way
            await Eventually.TrueAsync(() => !File.Exists(Path.Combine(Journal, "000000000002.log.tmp")), because: "the failed snapshot is cleaned up");
            Assert.Equal(body, await Content(spool, id));         // still in segment 1, and found there
            Directory.Delete(blocker);
            spool.RequestCompaction();
            await Commit(spool);                                  // wakes the writer for the retry
            await Eventually.TrueAsync(() => !File.Exists(Path.Combine(Journal, "000000000001.log")), because: "the second compaction finished");
            Assert.Equal(body, await Content(spool, id));
        }
        await using var reopened = Open();
        Assert.Equal(body, await Content(reopened, id));
    }

    [Fact]
    public async Task A_body_damaged_after_start_moves_with_its_damage_and_is_quarantined_with_it_when_read()
    {
        string id;
        (string Id, byte[] Bytes) good;
        await using (var spool = Open())
        {
            (id, _) = await Commit(spool, 2000);
            good = await Commit(spool, 2000);
        }
        var seg = Directory.EnumerateFiles(Journal, "*.log").Order().First();
        await using (var spool = Open())
        {
            Assert.NotNull(spool.Find(id));
            // Replay read it fine; then a sector goes bad under the first body.
            using (var fs = new FileStream(seg, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
            {
                fs.Position = 16 + 8 + 100;
                var b = fs.ReadByte();
                fs.Position = 16 + 8 + 100;
                fs.WriteByte((byte)(b ^ 0xFF));
            }
            spool.RequestCompaction();
            await Eventually.TrueAsync(() => !File.Exists(seg), because: "old segment deleted");
            Assert.Equal(good.Bytes, await Content(spool, good.Id));
            await Assert.ThrowsAsync<SpoolCorruptException>(() => Content(spool, id));
        }
        // What the record held, damage included, is kept for the operator.
        Assert.True(new FileInfo(Path.Combine(Root, "quarantine", id)).Length > 2000);
    }
}
