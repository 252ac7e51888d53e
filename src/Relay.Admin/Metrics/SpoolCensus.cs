// SpoolCensus: facts only a walk over the spool can give (oldest pending arrival per virtual queue, live and
// dead-letter counts, bytes on disk). The walk is repeated at most once per CensusInterval, so scrapes and
// /api/queues calls stay cheap however often they come.
using Relay.Spool;

namespace Relay.Admin.Metrics;

public sealed record SpoolFacts(
    DateTimeOffset TakenAt,
    IReadOnlyDictionary<string, DateTimeOffset> OldestPendingByQueue,
    long LiveMessages,
    long DeadLetters,
    long? Bytes);

public sealed class SpoolCensus(ISpoolStore spool, TimeProvider clock, AdminOptions options, string? spoolRoot = null)
{
    private const int Page = 1000;
    private readonly SemaphoreSlim _walking = new(1, 1);
    private SpoolFacts? _last;

    /// <summary>The latest facts, walking the spool again when they are older than the interval.</summary>
    public async Task<SpoolFacts> GetAsync(CancellationToken cancellationToken)
    {
        if (Fresh(_last) is { } cached) return cached;
        await _walking.WaitAsync(cancellationToken);
        try
        {
            if (Fresh(_last) is { } again) return again;
            var facts = await Task.Run(Walk, cancellationToken);
            _last = facts;
            return facts;
        }
        finally { _walking.Release(); }
    }

    /// <summary>Forgets the cached facts (after an operator action changed the spool).</summary>
    public void Invalidate() => _last = null;

    private SpoolFacts? Fresh(SpoolFacts? facts) =>
        facts is not null && clock.GetUtcNow() - facts.TakenAt < options.CensusInterval ? facts : null;

    private SpoolFacts Walk()
    {
        var oldest = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        long live = 0, dead = 0;
        string? after = null;
        while (true)
        {
            var page = spool.List(after, Page);
            foreach (var m in page)
            {
                if (m.FinalizedAt is not null) dead++;
                else live++;
                foreach (var r in m.Recipients)
                {
                    // Ids (and so pages) go by arrival: the first pending recipient seen per queue is its oldest.
                    if (r.Status == RecipientStatus.Pending && !oldest.ContainsKey(r.Queue)) oldest[r.Queue] = m.ArrivedAt;
                }
            }
            if (page.Count < Page) break;
            after = page[^1].Id;
        }
        return new SpoolFacts(clock.GetUtcNow(), oldest, live, dead, BytesUnder(spoolRoot));
    }

    private static long? BytesUnder(string? root)
    {
        if (root is null || !Directory.Exists(root)) return null;
        long total = 0;
        try
        {
            foreach (var f in new DirectoryInfo(root).EnumerateFiles("*", SearchOption.AllDirectories)) total += f.Length;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return total;
    }
}
