// IdempotencyStore: (client, Idempotency-Key) → the answer of the first request, for [api] idempotency-window.
// Kept in memory and in an append-only file (<spool>/api/idempotency.log, 0600, one JSON line per key), fsynced
// before the answer goes out (group-committed: concurrent requests share an fsync), and replayed at start, so a
// retry after a restart still gets the same id. A request that arrives while the first with the same key is
// still running waits for it and gets its answer. The only gap: a crash after the message commit and before
// this record's fsync forgets the key, so the client's retry queues the message again (at least once, never lost).
// The file is compacted at start and whenever it grows past a threshold while running (live keys rewritten to a
// temporary file, fsynced, renamed over the log, directory fsynced), so a busy API's log stays about the size of
// one window's keys. The temporary file's handle is the one appended to after the rename: nothing is reopened, so
// no failure after the rename can leave appends going to the unlinked old file.
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Relay.Spool;

namespace Relay.Api;

internal sealed class IdempotencyStore : IAsyncDisposable
{
    public const string FileName = "idempotency.log";
    /// <summary>Log size that triggers a compaction while running (then twice the compacted size, if larger).</summary>
    public const long DefaultCompactAt = 8L * 1024 * 1024;

    /// <summary>One remembered key: the request body's hash and the answer given.</summary>
    internal sealed record Entry(string Client, string Key, string Hash, string Id, int Recipients, DateTimeOffset At, DateTimeOffset? NotBefore);

    /// <summary>What to do with a request that carries a key.</summary>
    internal abstract record Reservation
    {
        /// <summary>Seen before with the same body: answer the same.</summary>
        public sealed record Replay(Entry Entry) : Reservation;
        /// <summary>Seen before (or running) with a different body.</summary>
        public sealed record Conflict : Reservation;
        /// <summary>The same request is running now: wait for its answer.</summary>
        public sealed record Wait(Task<ApiOutcome> Outcome) : Reservation;
        /// <summary>New: this request runs it and must call <see cref="CompleteAsync"/> or <see cref="Abandon"/>.</summary>
        public sealed record Owner : Reservation;
    }

    private sealed class Slot
    {
        public Entry? Done;
        public string? PendingHash;
        public TaskCompletionSource<ApiOutcome>? Pending;
    }

    private readonly object _gate = new();
    private readonly Dictionary<(string, string), Slot> _slots = [];
    private readonly TimeSpan _window;
    private readonly TimeProvider _clock;
    private readonly ILogger _log;
    private readonly string _path;
    private readonly long _compactAt;
    private FileStream _file;
    // A compaction renamed a file in the directory and the directory is not fsynced yet: done before the next ack.
    private bool _directoryDirty;
    private long _nextCompact;
    // Every entry written to the log (owned by the flush loop): what a compaction rewrites, less the expired.
    private readonly Dictionary<(string, string), Entry> _written = [];
    private readonly List<(Entry Entry, TaskCompletionSource Done)> _queue = [];
    private bool _flushing;
    private int _sinceSweep;

    private IdempotencyStore(string path, FileStream file, long compactAt, TimeSpan window, TimeProvider clock, ILogger log)
    {
        _path = path;
        _file = file;
        _compactAt = compactAt;
        _nextCompact = Math.Max(compactAt, file.Length * 2);
        _window = window;
        _clock = clock;
        _log = log;
    }

    public static IdempotencyStore Open(string directory, TimeSpan window, TimeProvider clock, ILogger log, long compactAt = DefaultCompactAt)
    {
        SpoolFiles.CreatePrivateDirectory(directory);
        var path = Path.Combine(directory, FileName);
        var now = clock.GetUtcNow();
        var live = new List<Entry>();
        var dropped = 0;
        if (File.Exists(path))
        {
            foreach (var line in File.ReadLines(path, Encoding.UTF8))
            {
                Entry? e = null;
                try { e = JsonSerializer.Deserialize<Entry>(line, ApiJson.Options); }
                catch (JsonException) { }   // a torn last line after a crash: that request was never answered
                if (e is not null && e.At + window > now) live.Add(e);
                else dropped++;
            }
        }
        FileStream file;
        if (dropped > 0)
        {
            file = Rewrite(path, live);
            try { SpoolFiles.SyncDirectory(directory); }
            catch { file.Dispose(); throw; }
        }
        else file = new FileStream(path, PrivateFile(FileMode.Append));
        var store = new IdempotencyStore(path, file, compactAt, window, clock, log);
        foreach (var e in live)
        {
            store._slots[(e.Client, e.Key)] = new Slot { Done = e };
            store._written[(e.Client, e.Key)] = e;
        }
        return store;
    }

    /// <summary>
    /// Writes <paramref name="entries"/> to a temporary file, fsyncs it and renames it over <paramref name="path"/>;
    /// returns the temporary file's handle, positioned at its end, which is now the log (the caller fsyncs the
    /// directory). Throws (and leaves the old log in place) only when the rename did not happen.
    /// </summary>
    private static FileStream Rewrite(string path, IEnumerable<Entry> entries)
    {
        var temp = path + ".tmp";
        var t = new FileStream(temp, PrivateFile(FileMode.Create));
        try
        {
            foreach (var e in entries) t.Write(Line(e));
            t.Flush(true);
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            t.Dispose();
            try { File.Delete(temp); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            throw;
        }
        return t;
    }

    /// <summary>fsync of the log's directory (a test replaces it to inject a failure after a compaction's rename).</summary>
    internal Action<string> SyncDirectory { get; set; } = SpoolFiles.SyncDirectory;

    /// <summary>Current size of the log file (tests, diagnostics).</summary>
    internal long FileLength => _file.Length;

    /// <summary>Created 0600 like the spool's files (the keys name what clients sent).</summary>
    private static FileStreamOptions PrivateFile(FileMode mode)
    {
        var options = new FileStreamOptions { Mode = mode, Access = FileAccess.Write, Share = FileShare.Read };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = SpoolFiles.FileMode600;
        return options;
    }

    private static byte[] Line(Entry e) => [.. JsonSerializer.SerializeToUtf8Bytes(e, ApiJson.Options), (byte)'\n'];

    public Reservation Reserve(string client, string key, string hash)
    {
        var now = _clock.GetUtcNow();
        lock (_gate)
        {
            if (++_sinceSweep >= 4096) Sweep(now);
            if (_slots.TryGetValue((client, key), out var slot))
            {
                if (slot.Done is { } done && done.At + _window > now)
                    return done.Hash == hash ? new Reservation.Replay(done) : new Reservation.Conflict();
                if (slot.Pending is { } pending)
                    return slot.PendingHash == hash ? new Reservation.Wait(pending.Task) : new Reservation.Conflict();
            }
            _slots[(client, key)] = new Slot
            {
                PendingHash = hash,
                Pending = new TaskCompletionSource<ApiOutcome>(TaskCreationOptions.RunContinuationsAsynchronously),
            };
            return new Reservation.Owner();
        }
    }

    /// <summary>Durably remembers the key's answer (fsynced when this returns), then releases any waiters.</summary>
    public async Task CompleteAsync(Entry entry, ApiOutcome outcome)
    {
        try
        {
            await AppendAsync(entry);
        }
        catch (IOException e)
        {
            // The message is queued; only the memory of the key is not durable. Keep it in memory and go on.
            _log.IdempotencyFileProblem(_file.Name, e.Message);
        }
        TaskCompletionSource<ApiOutcome>? pending;
        lock (_gate)
        {
            var slot = _slots[(entry.Client, entry.Key)];
            pending = slot.Pending;
            slot.Done = entry;
            slot.Pending = null;
            slot.PendingHash = null;
        }
        pending?.TrySetResult(outcome);
    }

    /// <summary>The request did not queue anything: forget the key; waiters get the same answer.</summary>
    public void Abandon(string client, string key, ApiOutcome outcome)
    {
        TaskCompletionSource<ApiOutcome>? pending = null;
        lock (_gate)
        {
            if (_slots.Remove((client, key), out var slot)) pending = slot.Pending;
        }
        pending?.TrySetResult(outcome);
    }

    private void Sweep(DateTimeOffset now)
    {
        _sinceSweep = 0;
        foreach (var (k, slot) in _slots.Where(kv => kv.Value.Done is { } d && d.At + _window <= now).ToList()) _slots.Remove(k);
    }

    // Group commit: whoever finds no flush running writes every queued line and fsyncs once for all of them.
    private Task AppendAsync(Entry entry)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        bool start;
        lock (_queue)
        {
            _queue.Add((entry, done));
            start = !_flushing;
            _flushing = true;
        }
        if (start) _ = Task.Run(FlushLoop);
        return done.Task;
    }

    private void FlushLoop()
    {
        while (true)
        {
            List<(Entry Entry, TaskCompletionSource Done)> batch;
            lock (_queue)
            {
                if (_queue.Count == 0) { _flushing = false; return; }
                batch = [.. _queue];
                _queue.Clear();
            }
            try
            {
                foreach (var (entry, _) in batch) _file.Write(Line(entry));
                _file.Flush(flushToDisk: true);
                foreach (var (entry, _) in batch) _written[(entry.Client, entry.Key)] = entry;
                if (_file.Length >= _nextCompact) Compact();
                if (_directoryDirty)
                {
                    // Until the rename is durable a crash could bring back the old log without these lines.
                    SyncDirectory(Path.GetDirectoryName(_path)!);
                    _directoryDirty = false;
                }
                foreach (var (_, done) in batch) done.TrySetResult();
            }
            catch (Exception e)
            {
                foreach (var (_, done) in batch) done.TrySetException(e is IOException ? e : new IOException(e.Message, e));
            }
        }
    }

    /// <summary>
    /// Rewrites the log with the keys still inside the window (runs on the flush loop, so nothing appends meanwhile).
    /// A failure before the rename leaves the old log in use: it only grows, nothing is lost. Once renamed, the new
    /// file's handle is the log at once; the directory fsync follows in the flush loop (retried until it succeeds,
    /// and no append is acknowledged before it).
    /// </summary>
    private void Compact()
    {
        var now = _clock.GetUtcNow();
        foreach (var k in _written.Where(kv => kv.Value.At + _window <= now).Select(kv => kv.Key).ToList()) _written.Remove(k);
        FileStream next;
        try
        {
            next = Rewrite(_path, _written.Values);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.IdempotencyFileProblem(_path, "compaction failed: " + e.Message);
            _nextCompact = _file.Length * 2;
            return;
        }
        var old = _file;
        _file = next;
        _directoryDirty = true;
        old.Dispose();
        _nextCompact = Math.Max(_compactAt, next.Length * 2);
        _log.IdempotencyCompacted(_path, _written.Count);
    }

    public ValueTask DisposeAsync() => _file.DisposeAsync();
}
