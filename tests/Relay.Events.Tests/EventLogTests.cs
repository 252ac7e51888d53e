// The durable log on its own: read back after reopen, torn tails, group commit, file modes, duplicates, retention.
using Microsoft.Extensions.Time.Testing;
using Relay.Spool;

namespace Relay.Events.Tests;

public sealed class EventLogTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly FakeTimeProvider _clock = new(Envelopes.Epoch);

    private string EventsDir => Path.Combine(_dir.Path, "events");

    private DeliveryEventLog Open(DeliveryEventLogOptions? options = null) =>
        DeliveryEventLog.Open(EventsDir, options ?? new DeliveryEventLogOptions { PurgeInterval = null }, _clock);

    private static StoredEvent Deferred(int rcpt, int attempt, string text = "mailbox busy") => new()
    {
        Type = DeliveryEventType.Deferred, Rcpt = rcpt, Address = $"r{rcpt}@x.test", At = Envelopes.Epoch.AddMinutes(attempt),
        Attempt = attempt, Code = 450, Status = "4.2.0", Text = text, Host = "mx.x.test",
    };

    private static StoredEvent Final(string type, int rcpt, DateTimeOffset at, int attempt = 1) => new()
    {
        Type = type, Rcpt = rcpt, Address = $"r{rcpt}@x.test", At = at, Attempt = attempt,
        Code = type == DeliveryEventType.Delivered ? 250 : 550, Status = type == DeliveryEventType.Delivered ? "2.0.0" : "5.1.1",
        Text = type == DeliveryEventType.Delivered ? "ok" : "no such user",
    };

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Events_are_read_back_after_reopen_with_the_status_rebuilt_from_the_log_alone()
    {
        var env = Envelopes.Api("0000000000000001", recipients: ["r0@x.test", "r1@x.test"]);
        await using (var log = Open())
        {
            await log.MessageAcceptedAsync(env, CancellationToken.None);
            await log.AppendAsync(env, [Deferred(0, 1)]);
            await log.AppendAsync(env, [Final(DeliveryEventType.Delivered, 0, Envelopes.Epoch.AddMinutes(5), 2)]);
            await log.AppendAsync(env, [Final(DeliveryEventType.Failed, 1, Envelopes.Epoch.AddMinutes(6))]);
        }

        await using var reopened = Open();
        var status = await reopened.FindAsync(env.Id, CancellationToken.None);
        Assert.NotNull(status);
        Assert.Equal(("shop", "app@shop.test", 3, Envelopes.Epoch), (status.Client, status.Sender, status.Priority, status.AcceptedAt));
        Assert.Equal(Envelopes.Epoch.AddMinutes(6), status.FinishedAt);
        Assert.Equal([1L, 2, 3, 4], status.Events.Select(e => e.Sequence));
        Assert.Equal(["accepted", "deferred", "delivered", "failed"], status.Events.Select(e => e.Type));
        var r0 = status.Recipients[0];
        Assert.Equal(("r0@x.test", "delivered", "default", "default", 2, "250 2.0.0 ok"),
                     (r0.Address, r0.State, r0.Schedule, r0.Queue, r0.Attempts, r0.LastReply));
        Assert.Equal(("failed", "550 5.1.1 no such user"), (status.Recipients[1].State, status.Recipients[1].LastReply));

        // Sequence numbering goes on where it stopped.
        var next = Envelopes.Api("0000000000000002");
        await reopened.MessageAcceptedAsync(next, CancellationToken.None);
        Assert.Equal(5, reopened.LastSequence);
    }

    [Fact]
    public async Task A_torn_tail_is_ignored_and_the_log_goes_on()
    {
        var env = Envelopes.Api("0000000000000001");
        await using (var log = Open())
        {
            await log.MessageAcceptedAsync(env, CancellationToken.None);
            await log.AppendAsync(env, [Deferred(0, 1)]);
            await log.AppendAsync(env, [Deferred(0, 2, "second")]);
        }
        // A crash mid-write: the last record is cut in half.
        var segment = Directory.GetFiles(EventsDir, "*.events").Order().Last(f => new FileInfo(f).Length > 16);
        var length = new FileInfo(segment).Length;
        await using (var fs = new FileStream(segment, FileMode.Open)) fs.SetLength(length - 20);

        await using (var log = Open())
        {
            var status = await log.FindAsync(env.Id, CancellationToken.None);
            Assert.Equal(["accepted", "deferred"], status!.Events.Select(e => e.Type));
            Assert.Equal(1, status.Recipients[0].Attempts);
            await log.AppendAsync(env, [Final(DeliveryEventType.Delivered, 0, Envelopes.Epoch.AddMinutes(9), 3)]);
        }
        await using var again = Open();
        var after = await again.FindAsync(env.Id, CancellationToken.None);
        Assert.Equal(["accepted", "deferred", "delivered"], after!.Events.Select(e => e.Type));
        Assert.Equal("delivered", after.Recipients[0].State);
    }

    [Fact]
    public async Task A_damaged_record_in_the_middle_is_skipped_and_the_rest_is_kept()
    {
        var env = Envelopes.Api("0000000000000001");
        await using (var log = Open())
        {
            await log.MessageAcceptedAsync(env, CancellationToken.None);
            await log.AppendAsync(env, [Deferred(0, 1, "first-attempt")]);
            await log.AppendAsync(env, [Deferred(0, 2, "second")]);
        }
        var segment = Directory.GetFiles(EventsDir, "*.events").Order().Last(f => new FileInfo(f).Length > 16);
        var bytes = await File.ReadAllBytesAsync(segment);
        var at = System.Text.Encoding.ASCII.GetString(bytes).IndexOf("first-attempt", StringComparison.Ordinal);
        bytes[at] ^= 0xFF;   // bit rot inside the second record
        await File.WriteAllBytesAsync(segment, bytes);

        await using var reopened = Open();
        var status = await reopened.FindAsync(env.Id, CancellationToken.None);
        Assert.Equal(["accepted", "deferred"], status!.Events.Select(e => e.Type));
        Assert.Equal((2, "450 4.2.0 second"), (status.Recipients[0].Attempts, status.Recipients[0].LastReply));
    }

    [Fact]
    public async Task Concurrent_appends_share_fsyncs_and_files_are_private()
    {
        await using var log = Open();
        var envelopes = Enumerable.Range(1, 200).Select(i => Envelopes.Api(i.ToString("x16"))).ToList();
        await Task.WhenAll(envelopes.Select(e => Task.Run(() => log.MessageAcceptedAsync(e, CancellationToken.None).AsTask())));

        Assert.Equal(200, log.LastSequence);
        Assert.Equal(200, log.MessageCount);
        Assert.True(log.SyncCount < 200, $"{log.SyncCount} fsyncs for 200 appends: no group commit");
        if (OperatingSystem.IsWindows()) return;   // no Unix modes there
        Assert.Equal(SpoolFiles.DirMode700, File.GetUnixFileMode(EventsDir));
        Assert.All(Directory.GetFiles(EventsDir), f => Assert.Equal(SpoolFiles.FileMode600, File.GetUnixFileMode(f)));
    }

    [Fact]
    public async Task A_final_event_repeated_for_a_final_recipient_is_dropped()
    {
        await using var log = Open();
        var env = Envelopes.Api("0000000000000001");
        await log.MessageAcceptedAsync(env, CancellationToken.None);
        await log.AppendAsync(env, [Final(DeliveryEventType.Delivered, 0, Envelopes.Epoch)]);
        await log.AppendAsync(env, [Final(DeliveryEventType.Delivered, 0, Envelopes.Epoch)]);   // the scheduler repeated its report

        var status = await log.FindAsync(env.Id, CancellationToken.None);
        Assert.Equal(["accepted", "delivered"], status!.Events.Select(e => e.Type));
    }

    [Fact]
    public async Task Events_for_a_message_without_accepted_record_it_from_the_envelope_first()
    {
        await using var log = Open();
        var env = Envelopes.Api("0000000000000001");
        await log.AppendAsync(env, [Deferred(0, 1)]);               // delivery was faster than the API's accepted
        await log.MessageAcceptedAsync(env, CancellationToken.None); // ... which then finds it there

        var status = await log.FindAsync(env.Id, CancellationToken.None);
        Assert.Equal(["accepted", "deferred"], status!.Events.Select(e => e.Type));
    }

    [Fact]
    public async Task Purge_drops_messages_finished_longer_than_retention_ago_and_keeps_young_ones()
    {
        var options = new DeliveryEventLogOptions { PurgeInterval = null, Retention = TimeSpan.FromDays(7), SegmentBytes = 512 };
        var old = Envelopes.Api("0000000000000001");
        var young = Envelopes.Api("0000000000000002");
        var running = Envelopes.Api("0000000000000003");
        string oldest;
        await using (var log = Open(options))
        {
            await log.MessageAcceptedAsync(old, CancellationToken.None);
            await log.AppendAsync(old, [Final(DeliveryEventType.Delivered, 0, Envelopes.Epoch)]);
            for (var i = 0; i < 5; i++) await log.AppendAsync(running, [Deferred(0, i + 1)]);   // fills segments (512 bytes each)
            await log.MessageAcceptedAsync(young, CancellationToken.None);
            await log.AppendAsync(young, [Final(DeliveryEventType.Failed, 0, Envelopes.Epoch.AddDays(5))]);
            oldest = Directory.GetFiles(EventsDir, "*.events").Order().First();

            Assert.Equal(1, await log.PurgeAsync(Envelopes.Epoch.AddDays(7).AddMinutes(1), CancellationToken.None));

            Assert.Null(await log.FindAsync(old.Id, CancellationToken.None));
            Assert.NotNull(await log.FindAsync(young.Id, CancellationToken.None));
            Assert.NotNull(await log.FindAsync(running.Id, CancellationToken.None));
            // The oldest segment also holds the unfinished message's first events, so it stays for now.
            Assert.True(File.Exists(oldest));
            await log.AppendAsync(running, [Final(DeliveryEventType.Delivered, 0, Envelopes.Epoch.AddDays(6))]);
        }
        await using (var log = Open(options))
        {
            Assert.Null(await log.FindAsync(old.Id, CancellationToken.None));   // the tombstone survives a restart
            Assert.Equal(0, await log.PurgeAsync(Envelopes.Epoch.AddDays(11), CancellationToken.None));
            Assert.Equal(2, await log.PurgeAsync(Envelopes.Epoch.AddDays(13).AddMinutes(1), CancellationToken.None));
            Assert.Null(await log.FindAsync(young.Id, CancellationToken.None));
            Assert.Null(await log.FindAsync(running.Id, CancellationToken.None));
            Assert.False(File.Exists(oldest));
            Assert.Single(Directory.GetFiles(EventsDir, "*.events"));   // only the active segment is left
            Assert.Equal(0, log.MessageCount);
        }
        await using (var log = Open(options))
        {
            // Every segment with events is gone, yet numbering never goes back (webhook cursors depend on it).
            await log.MessageAcceptedAsync(Envelopes.Api("0000000000000004"), CancellationToken.None);
            Assert.Equal(12, log.LastSequence);   // 11 events before the purge
        }
    }

    [Fact]
    public async Task A_message_that_never_finishes_is_purged_after_the_unfinished_retention()
    {
        await using var log = Open(new DeliveryEventLogOptions { PurgeInterval = null, UnfinishedRetention = TimeSpan.FromDays(30) });
        var env = Envelopes.Api("0000000000000001");
        await log.MessageAcceptedAsync(env, CancellationToken.None);

        Assert.Equal(0, await log.PurgeAsync(Envelopes.Epoch.AddDays(29), CancellationToken.None));
        Assert.Equal(1, await log.PurgeAsync(Envelopes.Epoch.AddDays(30), CancellationToken.None));
        Assert.Null(await log.FindAsync(env.Id, CancellationToken.None));
    }

    [Fact]
    public async Task The_background_purge_runs_on_its_timer()
    {
        await using var log = Open(new DeliveryEventLogOptions { PurgeInterval = TimeSpan.FromHours(1), Retention = TimeSpan.FromDays(1) });
        var env = Envelopes.Api("0000000000000001");
        await log.MessageAcceptedAsync(env, CancellationToken.None);
        await log.AppendAsync(env, [Final(DeliveryEventType.Delivered, 0, Envelopes.Epoch)]);

        _clock.Advance(TimeSpan.FromHours(25));
        await Eventually.TrueAsync(() => log.MessageCount == 0, because: "the purge timer did not purge");
    }
}
