// Spool: durability, recovery, quarantine, permissions and write failures of the file spool.
using Microsoft.Extensions.Time.Testing;
using Relay.Spool;

namespace Relay.Spool.Tests;

public sealed class SpoolTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly FakeTimeProvider _clock = new(Harness.Epoch);
    private string Root => Path.Combine(_dir.Path, "spool");

    public void Dispose() => _dir.Dispose();

    private FileSpool Open(FileSpoolOptions? options = null) => FileSpool.Open(Root, options, _clock);

    // Tests of message files: every message gets one (small ones otherwise go inline in the journal; InlineBodyTests).
    private static readonly FileSpoolOptions Files = new() { InlineLimit = 0 };

    private Task<string> Commit(FileSpool spool, params string[] addresses) =>
        Messages.CommitAsync(spool, _clock.GetUtcNow(), 0, addresses.Select(a => (a, "default", "default")).ToArray());

    [Fact]
    public async Task Committed_message_reads_back_with_its_envelope_and_exact_bytes()
    {
        await using var spool = Open();
        var id = await Commit(spool, "a@x.test", "b@y.test");

        var envelope = await spool.ReadEnvelopeAsync(id, default);
        Assert.Equal(id, envelope.Id);
        Assert.Equal(["a@x.test", "b@y.test"], envelope.Recipients.Select(r => r.Address));
        await using var content = await spool.OpenContentAsync(id, default);
        using var copy = new MemoryStream();
        await content.CopyToAsync(copy);
        Assert.Equal(Messages.Body(id), copy.ToArray());
        Assert.Equal(copy.Length, envelope.Size);
        var handed = spool.TakeCommitted(10);
        Assert.Equal(id, Assert.Single(handed).Id);
        Assert.Equal(["x.test", "y.test"], new[] { handed[0].GetRecipient(0).Domain, handed[0].GetRecipient(1).Domain });
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task Spool_files_are_readable_by_the_owner_only()
    {
        await using var spool = Open(Files);
        var id = await Commit(spool, "a@x.test");

        Assert.Equal(SpoolFiles.DirMode700, File.GetUnixFileMode(Root));
        foreach (var dir in Directory.EnumerateDirectories(Root, "*", SearchOption.AllDirectories))
            Assert.Equal(SpoolFiles.DirMode700, File.GetUnixFileMode(dir));
        var files = Directory.EnumerateFiles(Root, "*", SearchOption.AllDirectories).ToList();
        Assert.Contains(files, f => Path.GetFileName(f) == id);
        Assert.Contains(files, f => f.EndsWith(".log"));
        foreach (var file in files) Assert.Equal(SpoolFiles.FileMode600, File.GetUnixFileMode(file));
    }

    [Fact]
    public async Task Journal_write_failure_throws_SpoolWriteException_and_queues_nothing()
    {
        var fail = false;
        await using (var spool = Open(new FileSpoolOptions { Fault = what => fail && what == "journal" ? new IOException("No space left on device") : null }))
        {
            fail = true;
            await Assert.ThrowsAsync<SpoolWriteException>(() => Commit(spool, "a@x.test"));
            Assert.Empty(spool.TakeCommitted(10));
            Assert.Equal(0, spool.Count);
            Assert.Equal(0, spool.CountPending("default"));
            Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "msg"), "*", SearchOption.AllDirectories));
            fail = false;
            await Commit(spool, "b@x.test");   // the spool keeps working once the disk recovers
        }
        await using var reopened = Open();
        var all = reopened.TakeCommitted(10);
        Assert.Single(all);
        Assert.Equal("x.test", all[0].GetRecipient(0).Domain);
        Assert.Equal(1, reopened.CountPending("default"));
    }

    [Fact]
    public async Task Data_write_failure_throws_SpoolWriteException_and_queues_nothing()
    {
        await using var spool = Open(new FileSpoolOptions { Fault = what => what == "data" ? new IOException("I/O error") : null });
        Assert.Throws<SpoolWriteException>(() => spool.Begin());
        Assert.Equal(0, spool.Count);
        Assert.Empty(spool.TakeCommitted(10));
    }

    [Fact]
    public async Task Recipient_states_survive_a_restart()
    {
        string id;
        var error = new DeliveryError(451, "4.7.1", "greylisted", "mx.y.test");
        await using (var spool = Open())
        {
            id = await Commit(spool, "a@x.test", "b@y.test");
            await spool.UpdateRecipientsAsync(id, [
                new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true),
                new RecipientChange(1, RecipientStatus.Pending, 2, _clock.GetUtcNow().AddMinutes(5), error, 1, false),
            ], default);
        }
        await using var reopened = Open();
        var m = reopened.Find(id)!;
        Assert.Equal(RecipientStatus.Delivered, m.GetRecipient(0).Status);
        var b = m.GetRecipient(1);
        Assert.Equal((RecipientStatus.Pending, 2, 1), (b.Status, b.Attempts, b.NotifySent));
        Assert.Equal(_clock.GetUtcNow().AddMinutes(5), b.NextAttemptAt);
        Assert.Equal(error, b.LastError);
        Assert.Equal(1, reopened.CountPending("default"));
    }

    [Fact]
    public async Task TryReadEnvelope_never_quarantines_an_unreadable_or_missing_file()
    {
        await using var spool = Open(Files);
        var bad = await Commit(spool, "a@x.test");
        var good = await Commit(spool, "b@x.test");
        var path = Path.Combine(Root, "msg", bad[^1].ToString(), bad);
        using (var fs = new FileStream(path, FileMode.Open)) fs.SetLength(fs.Length - 10);

        Assert.Null(await spool.TryReadEnvelopeAsync(bad, default));
        Assert.NotNull(spool.Find(bad));
        Assert.True(File.Exists(path));
        Assert.False(File.Exists(Path.Combine(Root, "quarantine", bad)));
        File.Move(path, path + ".away");
        Assert.Null(await spool.TryReadEnvelopeAsync(bad, default));
        Assert.NotNull(spool.Find(bad));
        Assert.Equal(good, (await spool.TryReadEnvelopeAsync(good, default))!.Id);
    }

    [Fact]
    public async Task Truncated_message_file_is_quarantined_and_the_others_stay_readable()
    {
        await using var spool = Open(Files);
        var bad = await Commit(spool, "a@x.test");
        var good = await Commit(spool, "b@x.test");
        var path = Path.Combine(Root, "msg", bad[^1].ToString(), bad);
        using (var fs = new FileStream(path, FileMode.Open)) fs.SetLength(fs.Length - 10);

        await Assert.ThrowsAsync<SpoolCorruptException>(async () => await spool.ReadEnvelopeAsync(bad, default));
        Assert.Null(spool.Find(bad));
        Assert.True(File.Exists(Path.Combine(Root, "quarantine", bad)));
        Assert.False(File.Exists(path));
        Assert.Equal(good, (await spool.ReadEnvelopeAsync(good, default)).Id);
        await spool.DisposeAsync();
        await using var reopened = Open();
        Assert.Null(reopened.Find(bad));   // the quarantine is durable
        Assert.NotNull(reopened.Find(good));
    }

    [Fact]
    public async Task Corrupt_journal_record_is_skipped_quarantined_and_the_lost_message_rescued_from_its_file()
    {
        string[] ids;
        await using (var spool = Open(Files))
        {
            ids = [await Commit(spool, "a@x.test"), await Commit(spool, "b@x.test"), await Commit(spool, "c@x.test")];
        }
        var segment = Directory.EnumerateFiles(Path.Combine(Root, "journal"), "*.log").Single();
        var bytes = File.ReadAllBytes(segment);
        var at = IndexOf(bytes, System.Text.Encoding.UTF8.GetBytes(ids[1]));
        bytes[at + 3] ^= 0xFF;   // damage the second record (its CRC no longer matches)
        File.WriteAllBytes(segment, bytes);

        await using var reopened = Open(Files);
        Assert.All(ids, id => Assert.NotNull(reopened.Find(id)));
        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(Root, "quarantine"), "journal-*"));
        Assert.Equal(3, reopened.CountPending("default"));
    }

    [Fact]
    public async Task Torn_journal_tail_after_a_crash_is_ignored()
    {
        string id;
        await using (var spool = Open()) id = await Commit(spool, "a@x.test");
        var segment = Directory.EnumerateFiles(Path.Combine(Root, "journal"), "*.log").Single();
        await File.AppendAllTextAsync(segment, "\u0050\u0000\u0000\u0000garbage");   // half a frame

        await using var reopened = Open();
        Assert.NotNull(reopened.Find(id));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Root, "quarantine")));
        await Commit(reopened, "b@x.test");   // and it keeps writing (in a fresh segment)
    }

    [Fact]
    public async Task Message_file_without_journal_record_was_never_acknowledged_and_is_deleted()
    {
        await using (var spool = Open(Files))
        {
            await using var m = spool.Begin();
            await m.WriteAsync(Messages.Body(m.Id));
            File.Copy(Path.Combine(Root, "msg", m.Id[^1].ToString(), m.Id), Path.Combine(_dir.Path, "copy"));
            await Commit(spool, "keep@x.test");
            File.Copy(Path.Combine(_dir.Path, "copy"), Path.Combine(Root, "msg", m.Id[^1].ToString(), m.Id + "x"));
        }
        await using var reopened = Open();
        Assert.Equal(1, reopened.Count);
        Assert.Single(Directory.EnumerateFiles(Path.Combine(Root, "msg"), "*", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task Compaction_keeps_the_live_state_and_drops_old_segments()
    {
        var ids = new List<string>();
        await using (var spool = Open())
        {
            for (var i = 0; i < 50; i++) ids.Add(await Commit(spool, $"r{i}@x.test", $"s{i}@y.test"));
            for (var i = 0; i < 50; i += 2)
            {
                await spool.UpdateRecipientsAsync(ids[i], [
                    new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true),
                    new RecipientChange(1, RecipientStatus.Delivered, 1, null, null, 0, true)], default);
                await spool.CompleteAsync(ids[i], default);
            }
            await spool.UpdateRecipientsAsync(ids[1], [new RecipientChange(1, RecipientStatus.Pending, 3, _clock.GetUtcNow().AddHours(1), null, 1, false)], default);
            var before = Directory.EnumerateFiles(Path.Combine(Root, "journal"), "*.log").ToList();
            spool.RequestCompaction();
            await Eventually.TrueAsync(() => !before.Any(File.Exists), because: "old segments deleted");
            await Commit(spool, "after@x.test");
        }
        await using var reopened = Open();
        Assert.Equal(26, reopened.Count);
        for (var i = 0; i < 50; i++) Assert.Equal(i % 2 == 1, reopened.Find(ids[i]) is not null);
        Assert.Equal((3, 1), (reopened.Find(ids[1])!.GetRecipient(1).Attempts, reopened.Find(ids[1])!.GetRecipient(1).NotifySent));
        Assert.Equal(51, reopened.CountPending("default"));
    }

    [Theory]
    [InlineData(0)]           // every message has a file
    [InlineData(64 * 1024)]   // small messages inline in the journal (the default)
    public async Task Delivered_message_is_removed_and_failed_one_kept_as_dead_letter_until_retention_ends(int inlineLimit)
    {
        await using var spool = Open(new FileSpoolOptions { Retention = TimeSpan.FromDays(7), InlineLimit = inlineLimit });
        var delivered = await Commit(spool, "a@x.test");
        var failed = await Commit(spool, "b@x.test");
        await spool.UpdateRecipientsAsync(delivered, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true)], default);
        await spool.UpdateRecipientsAsync(failed, [new RecipientChange(0, RecipientStatus.Failed, 1, null, new DeliveryError(550, "5.1.1", "no such user", null), 0, true)], default);
        await spool.CompleteAsync(delivered, default);
        await spool.CompleteAsync(failed, default);
        string FileOf(string id) => Path.Combine(Root, "msg", id[^1].ToString(), id);

        Assert.False(File.Exists(FileOf(delivered)));
        Assert.Null(spool.Find(delivered));
        Assert.Equal(inlineLimit == 0, File.Exists(FileOf(failed)));
        Assert.NotNull(spool.Find(failed)!.FinalizedAt);
        Assert.Equal(failed, (await spool.ReadEnvelopeAsync(failed, default)).Id);   // a dead letter stays readable (requeue, admin view)

        Assert.Equal(0, await spool.PurgeDeadLettersAsync(_clock.GetUtcNow().AddDays(6), default));
        Assert.Equal(1, await spool.PurgeDeadLettersAsync(_clock.GetUtcNow().AddDays(7), default));
        Assert.False(File.Exists(FileOf(failed)));
        Assert.Null(spool.Find(failed));
        await spool.DisposeAsync();
        await using var reopened = Open(new FileSpoolOptions { InlineLimit = inlineLimit });
        Assert.Equal(0, reopened.Count);   // the purge is durable; no leftover body comes back
    }

    [Fact]
    public async Task Settle_completes_in_one_commit_only_when_every_recipient_is_final_and_reported_and_survives_reopen()
    {
        string delivered, failed, partial;
        await using (var spool = Open(Files))
        {
            delivered = await Commit(spool, "a@x.test");
            failed = await Commit(spool, "b@x.test", "c@x.test");
            partial = await Commit(spool, "d@x.test", "e@x.test");

            Assert.True(await spool.SettleAsync(delivered, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true)], default));
            Assert.True(await spool.SettleAsync(failed, [
                new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, true),
                new RecipientChange(1, RecipientStatus.Failed, 1, null, new DeliveryError(550, "5.1.1", "no such user", "mx.test"), 0, true)], default));
            // One recipient final but unreported, the other still pending: nothing completes.
            Assert.False(await spool.SettleAsync(partial, [new RecipientChange(0, RecipientStatus.Delivered, 1, null, null, 0, false)], default));

            Assert.Null(spool.Find(delivered));
            Assert.False(File.Exists(Path.Combine(Root, "msg", delivered[^1].ToString(), delivered)));
            Assert.NotNull(spool.Find(failed)!.FinalizedAt);
        }

        await using var reopened = Open(Files);
        Assert.Null(reopened.Find(delivered));
        var dead = reopened.Find(failed)!;
        Assert.NotNull(dead.FinalizedAt);
        Assert.Equal(new DeliveryError(550, "5.1.1", "no such user", "mx.test"), dead.GetRecipient(1).LastError);
        var open = reopened.Find(partial)!;
        Assert.Null(open.FinalizedAt);
        Assert.Equal(RecipientStatus.Delivered, open.GetRecipient(0).Status);
        Assert.False(open.GetRecipient(0).FinalReported);
        Assert.Equal(1, reopened.CountPending("default"));
    }

    [Fact]
    public async Task Concurrent_commits_share_journal_fsyncs()
    {
        await using var spool = Open();
        var before = spool.JournalSyncs;
        const int writers = 32, each = 10;
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < each; i++) await Commit(spool, $"w{w}m{i}@x.test");
        })));
        var syncs = spool.JournalSyncs - before;
        Assert.Equal(writers * each, spool.Count);
        Assert.True(syncs < writers * each / 2, $"{syncs} journal fsyncs for {writers * each} commits");
    }

    [Fact]
    public async Task Admin_listing_pages_through_messages_in_id_order()
    {
        await using var spool = Open();
        var ids = new List<string>();
        for (var i = 0; i < 5; i++) { ids.Add(await Commit(spool, $"r{i}@x.test")); _clock.Advance(TimeSpan.FromSeconds(1)); }
        var first = spool.List(null, 3);
        var second = spool.List(first[^1].Id, 3);
        Assert.Equal(ids, first.Concat(second).Select(m => m.Id));
        Assert.Equal(RecipientStatus.Pending, first[0].Recipients[0].Status);
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (var i = 0; i <= haystack.Length - needle.Length; i++)
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        throw new InvalidOperationException("not found");
    }

    [Fact]
    public async Task Ids_are_kept_as_numbers_yet_found_listed_and_recovered_by_their_text()
    {
        var ids = new List<string>();
        await using (var spool = Open())
        {
            for (var i = 0; i < 5; i++)
            {
                ids.Add(await Commit(spool, "a@x.test"));
                _clock.Advance(TimeSpan.FromMilliseconds(1));
            }
            Assert.All(ids, id => Assert.Matches("^[0-9a-f]{16}$", id));
            Assert.Equal(ids[2], spool.Find(ids[2])!.Id);
            Assert.Null(spool.Find(ids[2].ToUpperInvariant()));
            Assert.Null(spool.Find("not-a-queue-id"));
            Assert.Null(spool.Find(""));
        }
        await using (var spool = Open())
        {
            Assert.Equal(ids, spool.List(null, 10).Select(m => m.Id));
            Assert.Equal(ids[3..], spool.List(ids[2], 10).Select(m => m.Id));
            Assert.Equal(ids[1..3], spool.List(ids[0], 2).Select(m => m.Id));
            Assert.Equal(ids, spool.TakeCommitted(10).Select(m => m.Id));
        }
    }
}
