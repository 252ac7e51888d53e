// Inline bodies: small messages kept in the journal itself (no file of their own), through commit, read,
// compaction, restart, damage, failed writes and rescue; bigger ones spill into a message file.
using Microsoft.Extensions.Time.Testing;

namespace Relay.Spool.Tests;

public sealed class InlineBodyTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly FakeTimeProvider _clock = new(Harness.Epoch);
    private string Root => Path.Combine(_dir.Path, "spool");

    public void Dispose() => _dir.Dispose();

    private FileSpool Open(int inlineLimit = 64 * 1024) => FileSpool.Open(Root, new FileSpoolOptions { InlineLimit = inlineLimit }, _clock);

    private int MessageFiles => Directory.EnumerateFiles(Path.Combine(Root, "msg"), "*", SearchOption.AllDirectories).Count();

    private List<string> Segments => Directory.EnumerateFiles(Path.Combine(Root, "journal"), "*.log").Order().ToList();

    /// <summary>Commits a message of <paramref name="size"/> bytes written in chunks of <paramref name="chunk"/>.</summary>
    private async Task<(string Id, byte[] Bytes)> Commit(FileSpool spool, int size = 300, int chunk = 100, string rcpt = "a@x.test")
    {
        await using var m = spool.Begin();
        var bytes = Messages.Body(m.Id, size);
        for (var at = 0; at < bytes.Length; at += chunk) await m.WriteAsync(bytes.AsMemory(at, Math.Min(chunk, bytes.Length - at)));
        await m.CommitAsync(new MessageEnvelope
        {
            Id = m.Id,
            Sender = "sender@example.test",
            ArrivedAt = _clock.GetUtcNow(),
            Recipients = [new RecipientEntry { Address = rcpt, Schedule = "default", Queue = "default" }],
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

    private static Task Deliver(FileSpool spool, string id) =>
        spool.SettleAsync(id, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true)], default).AsTask();

    [Fact]
    public async Task A_small_message_lives_in_the_journal_only_and_reads_back_exactly_after_a_restart()
    {
        (string Id, byte[] Bytes) small;
        await using (var spool = Open())
        {
            small = await Commit(spool, 5000, 700);
            Assert.Equal(0, MessageFiles);
            Assert.Equal(small.Bytes, await Content(spool, small.Id));
            Assert.Equal(5000, (await spool.ReadEnvelopeAsync(small.Id, default)).Size);
        }
        await using var reopened = Open();
        Assert.Equal(small.Bytes, await Content(reopened, small.Id));
        Assert.Equal(["a@x.test"], (await reopened.ReadEnvelopeAsync(small.Id, default)).Recipients.Select(r => r.Address));
        Assert.Equal(1, reopened.CountPending("default"));
    }

    [Fact]
    public async Task A_message_over_the_limit_spills_into_its_own_file_and_one_at_the_limit_stays_inline()
    {
        await using var spool = Open(inlineLimit: 1000);
        var atLimit = await Commit(spool, 1000, 300);
        Assert.Equal(0, MessageFiles);
        var over = await Commit(spool, 1001, 300);   // crosses the limit in its last chunk: the buffered bytes move to the file
        Assert.Equal(1, MessageFiles);
        Assert.True(File.Exists(Path.Combine(Root, "msg", over.Id[^1].ToString(), over.Id)));
        Assert.Equal(atLimit.Bytes, await Content(spool, atLimit.Id));
        Assert.Equal(over.Bytes, await Content(spool, over.Id));

        await Deliver(spool, over.Id);
        Assert.Equal(0, MessageFiles);   // a file message still has its file deleted when it is done
    }

    [Fact]
    public async Task Compaction_copies_live_bodies_into_the_snapshot_drops_delivered_ones_and_old_segments()
    {
        var live = new List<(string Id, byte[] Bytes)>();
        await using (var spool = Open())
        {
            for (var i = 0; i < 40; i++)
            {
                var m = await Commit(spool, 2000 + i, 500);
                if (i % 4 == 0) live.Add(m);
                else await Deliver(spool, m.Id);
            }
            var before = Segments;
            spool.RequestCompaction();
            await Eventually.TrueAsync(() => !before.Any(File.Exists), because: "old segments deleted");
            foreach (var (id, bytes) in live) Assert.Equal(bytes, await Content(spool, id));   // read from the snapshot now
            Assert.Equal(0, MessageFiles);
            // The snapshot holds the 10 live bodies, not the 30 delivered ones.
            Assert.InRange(new FileInfo(Segments.First()).Length, 10 * 2000, 15 * 2000);
        }
        await using var reopened = Open();
        Assert.Equal(10, reopened.Count);
        foreach (var (id, bytes) in live) Assert.Equal(bytes, await Content(reopened, id));
    }

    [Fact]
    public async Task Reads_running_through_compactions_never_fail_and_never_quarantine()
    {
        await using var spool = Open();
        var messages = new List<(string Id, byte[] Bytes)>();
        for (var i = 0; i < 20; i++) messages.Add(await Commit(spool, 3000 + i, 1000));
        using var stop = new CancellationTokenSource();
        var reads = 0;
        var reader = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                foreach (var (id, bytes) in messages) Assert.Equal(bytes, await Content(spool, id));
                Interlocked.Increment(ref reads);
            }
        });
        for (var round = 0; round < 5; round++)
        {
            var before = Segments;
            spool.RequestCompaction();
            await Eventually.TrueAsync(() => !before.Any(File.Exists), because: $"compaction {round} finished");
        }
        await Eventually.TrueAsync(() => Volatile.Read(ref reads) >= 3, because: "the reader made progress");
        stop.Cancel();
        await reader;
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "quarantine")));
        Assert.Equal(20, spool.Count);
    }

    [Fact]
    public async Task Commits_during_compactions_go_on_and_every_body_survives_a_restart()
    {
        var committed = new List<(string Id, byte[] Bytes)>();
        await using (var spool = Open())
        {
            for (var i = 0; i < 30; i++) committed.Add(await Commit(spool, 1500 + i, 500));
            using var stop = new CancellationTokenSource();
            var writer = Task.Run(async () =>
            {
                var mine = new List<(string, byte[])>();
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    var m = await Commit(spool, 1000 + i % 500, 400);
                    if (i % 3 == 0) await Deliver(spool, m.Id);
                    else mine.Add(m);
                }
                return mine;
            });
            for (var round = 0; round < 4; round++)
            {
                var before = Segments;
                spool.RequestCompaction();
                await Eventually.TrueAsync(() => !before.Any(File.Exists), because: $"compaction {round} finished");
            }
            stop.Cancel();
            committed.AddRange(await writer);
        }
        await using var reopened = Open();
        Assert.Equal(committed.Count, reopened.Count);
        foreach (var (id, bytes) in committed) Assert.Equal(bytes, await Content(reopened, id));
    }

    [Fact]
    public async Task A_damaged_body_is_quarantined_on_delivery_and_TryRead_never_quarantines_it()
    {
        await using var spool = Open();
        var bad = await Commit(spool);
        var good = await Commit(spool);
        SpoolDamage.CorruptInlineBody(Root, bad.Id);

        Assert.Null(await spool.TryReadEnvelopeAsync(bad.Id, default));
        Assert.NotNull(spool.Find(bad.Id));
        await Assert.ThrowsAsync<SpoolCorruptException>(async () => await spool.OpenContentAsync(bad.Id, default));
        Assert.Null(spool.Find(bad.Id));
        Assert.True(File.Exists(Path.Combine(Root, "quarantine", bad.Id + ".reason")));
        var kept = File.ReadAllBytes(Path.Combine(Root, "quarantine", bad.Id));   // what the record held, for the operator
        Assert.Equal(1, bad.Bytes.Zip(kept).Count(p => p.First != p.Second));   // the body with its one damaged byte
        Assert.Equal(good.Bytes, await Content(spool, good.Id));
    }

    [Fact]
    public async Task A_lost_message_record_is_rescued_from_its_body_record()
    {
        (string Id, byte[] Bytes) a, b, c;
        await using (var spool = Open())
        {
            a = await Commit(spool);
            b = await Commit(spool);
            c = await Commit(spool);
        }
        // Damage b's Message record (the last place its id appears: its Body record, which names it too, comes first).
        var segment = Segments.Single();
        var bytes = File.ReadAllBytes(segment);
        bytes[bytes.AsSpan().LastIndexOf(System.Text.Encoding.ASCII.GetBytes(b.Id)) + 3] ^= 0xFF;
        File.WriteAllBytes(segment, bytes);

        await using var reopened = Open();
        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(Root, "quarantine"), "journal-*"));
        foreach (var (id, body) in new[] { a, b, c }) Assert.Equal(body, await Content(reopened, id));
        Assert.Equal(3, reopened.CountPending("default"));
    }

    [Fact]
    public async Task A_body_whose_message_record_was_torn_off_by_a_crash_was_never_acknowledged()
    {
        string kept;
        int cut;
        await using (var spool = Open())
        {
            kept = (await Commit(spool)).Id;
            var torn = await Commit(spool);
            var bytes = File.ReadAllBytes(Segments.Single());
            cut = bytes.AsSpan().LastIndexOf(System.Text.Encoding.ASCII.GetBytes(torn.Id));   // inside its Message record
        }
        var segment = Segments.Single();
        using (var fs = new FileStream(segment, FileMode.Open)) fs.SetLength(cut);

        await using var reopened = Open();
        Assert.Equal(1, reopened.Count);
        Assert.NotNull(reopened.Find(kept));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "quarantine")));
    }

    [Fact]
    public async Task A_requeued_dead_letter_keeps_its_body_through_compaction_and_restart()
    {
        (string Id, byte[] Bytes) dead;
        await using (var spool = Open())
        {
            dead = await Commit(spool, 4000, 1000);
            await spool.SettleAsync(dead.Id, [new RecipientChange(0, RecipientStatus.Failed, 1, null, new DeliveryError(550, "5.1.1", "no", null), 0, true)], default);
            var before = Segments;
            spool.RequestCompaction();
            await Eventually.TrueAsync(() => !before.Any(File.Exists), because: "compacted");
            Assert.True(await spool.ReopenAsync(dead.Id, [0], _clock.GetUtcNow(), default));   // a Message record that replaces the entry
        }
        await using var reopened = Open();
        Assert.Null(reopened.Find(dead.Id)!.FinalizedAt);
        Assert.Equal(dead.Bytes, await Content(reopened, dead.Id));
    }

    // ---- damage and failure (each test failed before its fix)

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
        var seg = Segments.AsEnumerable().Last();
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
        var seg = Segments.AsEnumerable().Last();
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
            var blocker = Path.Combine(Root, "journal", "000000000003.log");
            Directory.CreateDirectory(blocker);                   // stands in for any failure to create segment N+2 (EMFILE, ENOSPC...)
            spool.RequestCompaction();
            (id, body) = await Commit(spool);                     // before or after the failed compaction: acknowledged either way
            await Eventually.TrueAsync(() => !File.Exists(Path.Combine(Root, "journal", "000000000002.log.tmp")), because: "the failed snapshot is cleaned up");
            Assert.Equal(body, await Content(spool, id));         // still in segment 1, and found there
            Directory.Delete(blocker);
            spool.RequestCompaction();
            await Commit(spool);                                  // wakes the writer for the retry
            await Eventually.TrueAsync(() => !File.Exists(Path.Combine(Root, "journal", "000000000001.log")), because: "the second compaction finished");
            Assert.Equal(body, await Content(spool, id));
        }
        await using var reopened = Open();
        Assert.Equal(body, await Content(reopened, id));
    }

    [Fact]
    public async Task A_body_damaged_after_start_is_quarantined_with_its_bytes_by_the_compaction_that_meets_it()
    {
        string id;
        (string Id, byte[] Bytes) good;
        await using (var spool = Open())
        {
            (id, _) = await Commit(spool, 2000);
            good = await Commit(spool, 2000);
        }
        var seg = Segments.AsEnumerable().First();
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
            Assert.Null(spool.Find(id));                            // out of the queue, as a delivery attempt would have done
            Assert.Equal(good.Bytes, await Content(spool, good.Id));
        }
        // What the record held, damage included, is kept for the operator; the restart finds a clean journal.
        Assert.True(new FileInfo(Path.Combine(Root, "quarantine", id)).Length > 2000);
        await using var reopened = Open();
        Assert.Null(reopened.Find(id));
        Assert.Equal(good.Bytes, await Content(reopened, good.Id));
    }

    [Fact]
    public async Task A_body_damaged_between_runs_is_found_at_start_and_quarantined_with_its_bytes_when_read()
    {
        (string Id, byte[] Bytes) bad, good;
        await using (var spool = Open())
        {
            bad = await Commit(spool);
            good = await Commit(spool);
        }
        SpoolDamage.CorruptInlineBody(Root, bad.Id);

        await using var reopened = Open();
        Assert.NotNull(reopened.Find(bad.Id));   // linked to its damaged record, not taken for a message file
        await Assert.ThrowsAsync<SpoolCorruptException>(() => Content(reopened, bad.Id));
        Assert.DoesNotContain("missing", File.ReadAllText(Path.Combine(Root, "quarantine", bad.Id + ".reason")));
        Assert.Equal(1, bad.Bytes.Zip(File.ReadAllBytes(Path.Combine(Root, "quarantine", bad.Id))).Count(p => p.First != p.Second));
        Assert.Equal(good.Bytes, await Content(reopened, good.Id));   // the record after it was not lost
    }

    [Fact]
    public async Task A_body_compaction_cannot_read_does_not_make_every_later_commit_compact_again()
    {
        await using var spool = FileSpool.Open(Root, new FileSpoolOptions { CompactionBytes = 8 * 1024 }, _clock);
        var victim = await Commit(spool);
        var first = Segments;
        spool.RequestCompaction();
        await Eventually.TrueAsync(() => !first.Any(File.Exists), because: "first compaction finished");
        // The victim's Body now lives in the snapshot; cut the file inside its frame (a read error from here on).
        var snapshot = Segments.First();
        var bytes = File.ReadAllBytes(snapshot);
        var at = bytes.AsSpan().IndexOf([(byte)8, (byte)16, .. System.Text.Encoding.ASCII.GetBytes(victim.Id)]) - 8;
        using (var fs = new FileStream(snapshot, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete)) fs.SetLength(at + 4);

        for (var i = 0; i < 60; i++) await Commit(spool);   // ~30 KiB of journal, each commit its own batch

        // Each failed attempt leaves a segment behind; without a back-off there would be one per commit.
        Assert.InRange(Segments.Count, 1, 10);
        Assert.Equal(61, spool.Count);
    }

    [Fact]
    public async Task A_Body_whose_length_field_is_damaged_does_not_swallow_the_next_commit()
    {
        (string Id, byte[] Bytes) a, b;
        await using (var spool = Open())
        {
            a = await Commit(spool);                              // inline: Body + Message
            b = await Commit(spool, size: 70_000, chunk: 10_000); // spills into its own file: Message record only
        }
        var segment = Segments.Single();
        var bytes = File.ReadAllBytes(segment);
        Assert.Equal(8, bytes[16 + 8]);                            // the first frame is a's Body record
        // One damaged field: a's Body length now reaches the end of the segment (in bounds; "the next frame" is the end).
        BitConverter.TryWriteBytes(bytes.AsSpan(16), bytes.Length - 16 - 8);
        File.WriteAllBytes(segment, bytes);

        await using var reopened = Open();
        Assert.NotNull(reopened.Find(b.Id));                      // acknowledged: must still be here (rescued at least)
        Assert.Equal(b.Bytes, await Content(reopened, b.Id));
    }

    [Fact]
    public async Task A_damaged_Body_length_does_not_resend_a_recipient_marked_delivered_after_it()
    {
        string a, b;
        await using (var spool = Open())
        {
            a = (await Commit(spool)).Id;                          // inline: Body + Message
            await using (var m = spool.Begin())                   // b: spills into its own file, two recipients
            {
                b = m.Id;
                await m.WriteAsync(Messages.Body(m.Id, 70_000));
                await m.CommitAsync(new MessageEnvelope
                {
                    Id = m.Id, Sender = "sender@example.test", ArrivedAt = _clock.GetUtcNow(),
                    Recipients = [new RecipientEntry { Address = "r0@x.test", Schedule = "default", Queue = "default" },
                                  new RecipientEntry { Address = "r1@x.test", Schedule = "default", Queue = "default" }],
                });
            }
            await spool.UpdateRecipientsAsync(b, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true)], default);
        }
        var segment = Segments.Single();
        var bytes = File.ReadAllBytes(segment);
        Assert.Equal(8, bytes[16 + 8]);
        BitConverter.TryWriteBytes(bytes.AsSpan(16), bytes.Length - 16 - 8);   // a's Body length now reaches the segment end
        File.WriteAllBytes(segment, bytes);

        await using var reopened = Open();
        Assert.NotNull(reopened.Find(b));
        Assert.Equal(RecipientStatus.Delivered, reopened.Find(b)!.GetRecipient(0).Status);   // else r0 gets it again
    }

    [Fact]
    public async Task Bytes_inside_a_message_never_pass_for_a_journal_record_when_replay_scans_past_damage()
    {
        string victim, carrier;
        await using (var spool = Open())
        {
            victim = (await Commit(spool)).Id;
            // A sender's message whose body holds a well-formed frame, Remove(victim), with the plain CRC-32 anyone can compute.
            var forged = JournalRecords.Remove(victim);
            var frame = new byte[8 + forged.Length];
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(frame, forged.Length);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(4), System.IO.Hashing.Crc32.HashToUInt32(forged));
            forged.CopyTo(frame, 8);
            await using var m = spool.Begin();
            carrier = m.Id;
            await m.WriteAsync(System.Text.Encoding.ASCII.GetBytes("Subject: x\r\n\r\n"));
            await m.WriteAsync(frame);
            await m.WriteAsync(System.Text.Encoding.ASCII.GetBytes("\r\n"));
            await m.CommitAsync(new MessageEnvelope
            {
                Id = m.Id, Sender = "sender@example.test", ArrivedAt = _clock.GetUtcNow(),
                Recipients = [new RecipientEntry { Address = "a@x.test", Schedule = "default", Queue = "default" }],
            });
        }
        // Damage the carrier's Body frame (its CRC field): replay scans for the next frame from inside its bytes.
        var segment = Segments.Single();
        var bytes = File.ReadAllBytes(segment);
        var at = bytes.AsSpan().IndexOf([(byte)8, (byte)16, .. System.Text.Encoding.ASCII.GetBytes(carrier)]) - 8;
        bytes[at + 4] ^= 0xFF;
        File.WriteAllBytes(segment, bytes);

        await using var reopened = Open();
        Assert.NotNull(reopened.Find(victim));    // the segment's salt keeps the forged record from matching
        Assert.NotNull(reopened.Find(carrier));   // its own Message record, found by the scan, still applies
    }

    [Fact]
    public async Task A_journal_written_before_segments_had_a_salt_still_replays()
    {
        (string Id, byte[] Bytes) m;
        await using (var spool = Open()) m = await Commit(spool, 3000, 1000);
        // Turn the segment into the version 1 format: no salt in the header, plain CRCs.
        var segment = Segments.Single();
        var bytes = File.ReadAllBytes(segment);
        var salt = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(12));
        Assert.Equal(2u, System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)));
        Assert.NotEqual(0u, salt);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), 1);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(12), 0);
        for (var at = 16; at + 8 <= bytes.Length; at += 8 + BitConverter.ToInt32(bytes, at))
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at + 4), System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 4)) ^ salt);
        File.WriteAllBytes(segment, bytes);

        await using var reopened = Open();
        Assert.Equal(m.Bytes, await Content(reopened, m.Id));   // the Body is read back from the version 1 segment
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "quarantine")));
    }
}
