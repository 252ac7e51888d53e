// The spool against a model: random commits (inline and spilled sizes), updates, settles, completions, removals
// and re-opens from several writers at once, with compactions running, then a reopen of the spool compared with
// the model in every detail that must survive (recipient states, dead-letter marks, body bytes).
using System.Collections.Concurrent;
using System.Text;
using Relay.Spool;

namespace Relay.Spool.Tests;

public sealed class SpoolModelTests
{
    private sealed class Model(byte[] body, int recipients)
    {
        public readonly byte[] Body = body;
        public readonly (RecipientStatus Status, int Attempts, bool Reported)[] Rcpts =
            Enumerable.Repeat((RecipientStatus.Pending, 0, false), recipients).ToArray();
        public bool Finalized;
        public bool AllFinalAndReported => Rcpts.All(r => r.Status != RecipientStatus.Pending && r.Reported);
    }

    [Theory]
    [InlineData(1, 64 * 1024)]
    [InlineData(2, 0)]
    [InlineData(3, 2048)]
    public async Task After_random_concurrent_changes_and_compactions_a_reopened_spool_matches_the_model(int seed, int inlineLimit)
    {
        using var dir = new TempDir();
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(Harness.Epoch);
        var options = new FileSpoolOptions { InlineLimit = inlineLimit, CompactionBytes = 256 * 1024 };
        var spool = FileSpool.Open(dir.Path, options, clock);
        var models = new ConcurrentDictionary<string, Model>();
        var removed = new ConcurrentBag<string>();
        try
        {
            for (var round = 0; round < 3; round++)
            {
                var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
                {
                    var rnd = new Random(seed * 100 + round * 10 + w);
                    var mine = new List<string>();
                    for (var op = 0; op < 150; op++)
                    {
                        if (mine.Count == 0 || rnd.Next(4) == 0) { mine.Add(await CommitAsync(spool, rnd, models)); continue; }
                        var id = mine[rnd.Next(mine.Count)];
                        var m = models[id];
                        if (m.Finalized)
                        {
                            if (rnd.Next(2) == 0) { await spool.RemoveAsync(id, default); Forget(id); }
                            else
                            {
                                var failed = Enumerable.Range(0, m.Rcpts.Length).Where(i => m.Rcpts[i].Status == RecipientStatus.Failed).ToList();
                                Assert.True(await spool.ReopenAsync(id, failed, clock.GetUtcNow(), default));
                                foreach (var i in failed) m.Rcpts[i] = (RecipientStatus.Pending, 0, false);
                                m.Finalized = false;
                            }
                            continue;
                        }
                        switch (rnd.Next(10))
                        {
                            case 0:
                                await spool.RemoveAsync(id, default);
                                Forget(id);
                                break;
                            case 1 when m.AllFinalAndReported:
                                await spool.CompleteAsync(id, default);
                                Complete(id, m);
                                break;
                            default:
                                var changes = new List<RecipientChange>();
                                for (var i = 0; i < m.Rcpts.Length; i++)
                                {
                                    if (m.Rcpts[i].Status != RecipientStatus.Pending && m.Rcpts[i].Reported) continue;
                                    if (rnd.Next(3) == 0) continue;
                                    var status = m.Rcpts[i].Status != RecipientStatus.Pending ? m.Rcpts[i].Status
                                        : (RecipientStatus)new[] { RecipientStatus.Pending, RecipientStatus.Delivered, RecipientStatus.Failed }[rnd.Next(3)];
                                    var reported = status != RecipientStatus.Pending && rnd.Next(3) > 0;
                                    var attempts = m.Rcpts[i].Attempts + 1;
                                    changes.Add(new RecipientChange(i, status, attempts, status == RecipientStatus.Pending ? clock.GetUtcNow().AddMinutes(5) : null,
                                        status == RecipientStatus.Failed ? new DeliveryError(550, "5.1.1", "no such user", "mx.test") : null, 0, reported));
                                    m.Rcpts[i] = (status, attempts, reported);
                                }
                                if (changes.Count == 0) break;
                                if (rnd.Next(2) == 0) await spool.UpdateRecipientsAsync(id, changes, default);
                                else
                                {
                                    var completed = await spool.SettleAsync(id, changes, default);
                                    Assert.Equal(m.AllFinalAndReported, completed);
                                    if (completed) Complete(id, m);
                                }
                                break;
                        }
                        if (rnd.Next(40) == 0) spool.RequestCompaction();
                    }

                    void Forget(string id) { models.TryRemove(id, out _); mine.Remove(id); removed.Add(id); }
                    void Complete(string id, Model m)
                    {
                        if (m.Rcpts.Any(r => r.Status == RecipientStatus.Failed)) m.Finalized = true;
                        else Forget(id);
                    }
                })).ToList();
                await Task.WhenAll(writers);

                await spool.DisposeAsync();
                spool = FileSpool.Open(dir.Path, options, clock);
                await VerifyAsync(spool, models, removed);
            }
        }
        finally
        {
            await spool.DisposeAsync();
        }
    }

    private static async Task<string> CommitAsync(FileSpool spool, Random rnd, ConcurrentDictionary<string, Model> models)
    {
        var size = rnd.Next(3) switch { 0 => rnd.Next(50, 1500), 1 => rnd.Next(1500, 20_000), _ => rnd.Next(20_000, 150_000) };
        var body = new byte[size];
        for (var i = 0; i < size; i++) body[i] = (byte)('a' + (i * 7 + size) % 26);
        var recipients = rnd.Next(1, 4);
        await using var m = spool.Begin();
        // Written in pieces, as a session streams it.
        for (var at = 0; at < size; at += 4096) await m.WriteAsync(body.AsMemory(at, Math.Min(4096, size - at)));
        await m.CommitAsync(new MessageEnvelope
        {
            Id = m.Id,
            Sender = "s@example.test",
            ArrivedAt = Harness.Epoch,
            Recipients = Enumerable.Range(0, recipients).Select(i => new RecipientEntry { Address = $"r{i}@x{i}.test", Schedule = "default", Queue = "default" }).ToList(),
        });
        models[m.Id] = new Model(body, recipients);
        return m.Id;
    }

    private static async Task VerifyAsync(FileSpool spool, ConcurrentDictionary<string, Model> models, IEnumerable<string> removed)
    {
        Assert.Equal(models.Count, spool.Count);
        foreach (var id in removed) Assert.Null(spool.Find(id));
        foreach (var (id, model) in models)
        {
            var m = spool.Find(id);
            Assert.True(m is not null, $"{id} lost");
            Assert.Equal(model.Finalized, m.FinalizedAt is not null);
            for (var i = 0; i < model.Rcpts.Length; i++)
            {
                var s = m.GetRecipient(i);
                Assert.Equal(model.Rcpts[i], (s.Status, s.Attempts, s.FinalReported));
            }
            await using var content = await spool.OpenContentAsync(id, default);
            var bytes = new MemoryStream();
            await content.CopyToAsync(bytes);
            Assert.True(model.Body.AsSpan().SequenceEqual(bytes.ToArray()), $"{id}: body differs ({bytes.Length} bytes, expected {model.Body.Length})");
        }
    }
}
