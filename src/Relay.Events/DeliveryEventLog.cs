// DeliveryEventLog: the durable, append-only log of delivery events for API-submitted messages, and the status
// view built from it. Callers append under one lock (so sequence order = file order); one writer thread writes
// everything appended meanwhile with ONE fsync and then completes all their tasks (group commit, as the spool's
// journal does). In memory: one small entry per message (client, which recipients are final, where its events
// are on disk); FindAsync reads the events back from disk. Retention deletes whole segment files from the
// oldest on, once every message with events in them has been purged (README.md).
using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Scheduler;
using Relay.Spool;
using System.IO.Hashing;

namespace Relay.Events;

public sealed class DeliveryEventLogOptions
{
    /// <summary>How long a finished message's status and events are kept (<c>[spool] retention</c>).</summary>
    public TimeSpan Retention { get; init; } = TimeSpan.FromDays(7);

    /// <summary>
    /// A message that never finished (no final event, e.g. cancelled by an operator) is purged this long after it
    /// was accepted, once it is no longer in the spool (when a spool is given) — so the log cannot be pinned forever.
    /// </summary>
    public TimeSpan UnfinishedRetention { get; init; } = TimeSpan.FromDays(30);

    /// <summary>A segment file is closed and a new one started once it is this big.</summary>
    public long SegmentBytes { get; init; } = 16L * 1024 * 1024;

    /// <summary>How often the background purge runs (null = never; tests call <see cref="DeliveryEventLog.PurgeAsync"/>).</summary>
    public TimeSpan? PurgeInterval { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Test hook: return an exception to make the next batch write fail (as a disk error would).</summary>
    internal Func<Exception?>? Fault { get; init; }
}

public sealed class DeliveryEventLog : IAcceptedMessages, IMessageStatusSource, IQueueOperationsObserver, IAsyncDisposable
{
    private const uint SegmentMagic = 0x45594C52;   // "RLYE"
    private const int HeaderLength = 16;             // magic, version, base sequence (every event in it is greater)
    private const int OffsetBits = 40;

    private readonly string _dir;
    private readonly DeliveryEventLogOptions _options;
    private readonly TimeProvider _clock;
    private readonly ISpoolStore? _spool;
    private readonly ILogger _log;
    private readonly object _gate = new();
    private readonly Dictionary<string, MessageEntry> _messages = new(StringComparer.Ordinal);
    private readonly List<Segment> _segments = [];   // oldest first; the last is the active one
    private readonly ConcurrentDictionary<(string, int), RecipientOutcome> _outcomes = new();
    private readonly AutoResetEvent _signal = new(false);
    private readonly SemaphoreSlim _purgeLock = new(1, 1);
    private Batch _current = new();
    private long _sequence;          // last assigned (under _gate)
    private long _lastWrittenSeq;    // writer-owned
    private FileStream? _active;
    private long _durableLength;     // of the active segment (under _gate)
    private volatile bool _stopping;
    private Thread? _writer;
    private ITimer? _purgeTimer;

    private DeliveryEventLog(string dir, DeliveryEventLogOptions options, TimeProvider clock, ISpoolStore? spool, ILogger log)
    {
        _dir = dir;
        _options = options;
        _clock = clock;
        _spool = spool;
        _log = log;
    }

    /// <summary>
    /// Opens (or creates, 0700) the log in <paramref name="directory"/> (the host passes <c>&lt;spool&gt;/events</c>),
    /// replays it (a torn tail is ignored) and starts the writer and the background purge.
    /// </summary>
    /// <param name="spool">Optional: the live spool, for <see cref="RecipientStatusView.NextAttemptAt"/> of queued messages.</param>
    public static DeliveryEventLog Open(string directory, DeliveryEventLogOptions? options = null, TimeProvider? clock = null,
                                        ISpoolStore? spool = null, ILogger? logger = null)
    {
        var log = new DeliveryEventLog(directory, options ?? new DeliveryEventLogOptions(), clock ?? TimeProvider.System, spool,
                                       logger ?? NullLogger.Instance);
        log.Recover();
        log.StartWriter();
        return log;
    }

    /// <summary>The log's directory (the webhook cursors live in its <c>webhooks/</c> folder by default).</summary>
    public string Directory => _dir;

    /// <summary>Sequence of the last durable event (0 when none).</summary>
    public long LastSequence { get { lock (_gate) return _lastDurableSeq; } }
    private long _lastDurableSeq;

    /// <summary>Number of fsyncs of the log so far (group-commit efficiency is appends / syncs).</summary>
    public long SyncCount => Interlocked.Read(ref _syncCount);
    private long _syncCount;

    /// <summary>Messages currently known (for tests and metrics).</summary>
    public int MessageCount { get { lock (_gate) return _messages.Count; } }

    /// <summary>Raised on the writer thread after new events are durable: a coalescing "look again" signal.</summary>
    public event Action? Appended;

    /// <summary>The envelope source of messages submitted through the HTTP API (the ones this log follows).</summary>
    public const string ApiSource = "api";

    internal static bool IsApi(MessageEnvelope envelope) => envelope.Source == ApiSource;

    // ================================================================ public API

    public ValueTask MessageAcceptedAsync(MessageEnvelope envelope, CancellationToken cancellationToken)
    {
        if (!IsApi(envelope)) throw new ArgumentException($"only API submissions have events (source '{envelope.Source}')", nameof(envelope));
        Task durable;
        lock (_gate) durable = EnsureAcceptedLocked(envelope);
        return new ValueTask(durable.WaitAsync(cancellationToken));
    }

    public ValueTask<MessageStatusView?> FindAsync(string messageId, CancellationToken cancellationToken)
    {
        long[] positions;
        lock (_gate)
        {
            if (!_messages.TryGetValue(messageId, out var entry) || entry.Positions.Count == 0) return ValueTask.FromResult<MessageStatusView?>(null);
            positions = [.. entry.Positions];
        }
        var events = ReadAt(positions);
        return ValueTask.FromResult(StatusFold.Build(messageId, events, _spool));
    }

    /// <summary>
    /// Purges messages whose retention ended by <paramref name="now"/> (a durable tombstone, so replay does not
    /// bring them back), then deletes segment files from the oldest on while no kept message has events in them.
    /// Returns the number of messages purged. The background timer calls it too.
    /// </summary>
    public async ValueTask<int> PurgeAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        await _purgeLock.WaitAsync(cancellationToken);
        try
        {
            var ids = new List<string>();
            Task? durable = null;
            lock (_gate)
            {
                foreach (var (id, e) in _messages)
                {
                    if (e.Positions.Count == 0) continue;   // accepted not durable yet
                    var expired = e.FinishedTicks != 0
                        ? e.FinishedTicks + _options.Retention.Ticks <= now.UtcTicks
                        : e.AcceptedTicks + _options.UnfinishedRetention.Ticks <= now.UtcTicks && _spool?.Find(id) is null;
                    if (expired) ids.Add(id);
                }
                foreach (var id in ids) ForgetLocked(id);
                for (var i = 0; i < ids.Count; i += 10_000)
                    durable = AppendLocked(EventRecords.Purge(ids.GetRange(i, Math.Min(10_000, ids.Count - i))), null);
            }
            if (durable is not null) await durable.WaitAsync(cancellationToken);
            var deleted = DeleteUnusedSegments();
            if (ids.Count > 0 || deleted > 0) _log.Purged(ids.Count, deleted);
            return ids.Count;
        }
        finally { _purgeLock.Release(); }
    }

    // ================================================================ for the decorators

    /// <summary>
    /// Appends events about one message (creating its <c>accepted</c> event from the envelope first when the
    /// submission API has not recorded it yet) and completes when they are durable. Events about a recipient
    /// that is already durably final are dropped (a final report the scheduler repeats after a restart).
    /// </summary>
    internal Task AppendAsync(MessageEnvelope envelope, IReadOnlyList<StoredEvent> events)
    {
        lock (_gate)
        {
            var accepted = EnsureAcceptedLocked(envelope);
            var entry = _messages[envelope.Id];
            Task? last = null;
            foreach (var e in events)
            {
                if (e.Rcpt >= 0 && e.Rcpt < entry.Final.Length && entry.Final[e.Rcpt]) continue;
                e.Msg = envelope.Id;
                e.Client = entry.Client;
                last = AppendEventLocked(e, entry);
            }
            return last is null ? accepted : Task.WhenAll(accepted, last);
        }
    }

    /// <summary>
    /// An operator requeues final recipients of a dead letter: a durable <c>requeued</c> event each, after which their
    /// new attempts are recorded again (status and webhooks leave <c>failed</c>). Other messages are ignored.
    /// </summary>
    public ValueTask RequeuingAsync(string messageId, MessageEnvelope envelope, IReadOnlyList<int> recipients, CancellationToken cancellationToken)
    {
        if (!IsApi(envelope)) return ValueTask.CompletedTask;
        var now = _clock.GetUtcNow();
        var events = recipients.Distinct().Where(i => i >= 0 && i < envelope.Recipients.Count).Select(i => new StoredEvent
        {
            Type = DeliveryEventType.Requeued, Rcpt = i, Address = envelope.Recipients[i].Address, At = now,
            Text = "queued again by the operator",
        }).ToList();
        Task durable;
        lock (_gate)
        {
            var accepted = EnsureAcceptedLocked(envelope);
            var entry = _messages[envelope.Id];
            Task? last = null;
            foreach (var e in events)
            {
                e.Msg = envelope.Id;
                e.Client = entry.Client;
                last = AppendEventLocked(e, entry);
            }
            durable = last is null ? accepted : Task.WhenAll(accepted, last);
        }
        return new ValueTask(durable.WaitAsync(cancellationToken));
    }

    /// <summary>The operator cancelled the message: a final <c>failed</c> event ("cancelled by the operator") per recipient.</summary>
    public ValueTask CancelledAsync(string messageId, MessageEnvelope envelope, IReadOnlyList<int> recipients, CancellationToken cancellationToken)
    {
        if (!IsApi(envelope)) return ValueTask.CompletedTask;
        var now = _clock.GetUtcNow();
        var events = recipients.Distinct().Where(i => i >= 0 && i < envelope.Recipients.Count).Select(i => new StoredEvent
        {
            Type = DeliveryEventType.Failed, Rcpt = i, Address = envelope.Recipients[i].Address, At = now,
            Status = QueueScheduler.Cancelled.EnhancedStatus, Text = "cancelled by the operator",
        }).ToList();
        return new ValueTask(AppendAsync(envelope, events).WaitAsync(cancellationToken));
    }

    /// <summary>
    /// An attempt in flight during a cancel ended with these final outcomes: recorded as they are (delivered, failed),
    /// with no <c>bounced</c> (the scheduler sends no DSN for them).
    /// </summary>
    public ValueTask FinalOutcomesAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        if (!IsApi(report.Envelope)) return ValueTask.CompletedTask;
        var now = _clock.GetUtcNow();
        var events = report.Recipients.Select(r => EventingDeliveryReports.Final(this, report.MessageId, r, now)).ToList();
        return new ValueTask(AppendAsync(report.Envelope, events).WaitAsync(cancellationToken));
    }

    /// <summary>The delivery agent's successful outcome, kept until the final report turns it into an event.</summary>
    internal void RememberOutcome(string messageId, int index, RecipientOutcome outcome) => _outcomes[(messageId, index)] = outcome;

    internal RecipientOutcome? TakeOutcome(string messageId, int index) =>
        _outcomes.TryRemove((messageId, index), out var o) ? o : null;

    // ================================================================ index

    private sealed class MessageEntry(string client, long acceptedTicks, int recipients)
    {
        public readonly string Client = client;
        public readonly long AcceptedTicks = acceptedTicks;
        public readonly bool[] Final = new bool[recipients];   // durably final
        public int Remaining = recipients;
        public long FinishedTicks;                              // 0 = not finished
        public long LastFinalTicks;
        public readonly List<long> Positions = new(4);          // durable events: segment << 40 | offset
        public long LastSegment = -1;
        public Task? AcceptedDurable;
    }

    private sealed class Segment(long no, long baseSeq)
    {
        public readonly long No = no;
        public readonly long BaseSeq = baseSeq;
        public int Live;   // messages (still indexed) with events in this segment
    }

    private Task EnsureAcceptedLocked(MessageEnvelope envelope)
    {
        if (_messages.TryGetValue(envelope.Id, out var existing)) return existing.AcceptedDurable ?? Task.CompletedTask;
        var e = new StoredEvent
        {
            Type = DeliveryEventType.Accepted,
            Msg = envelope.Id,
            Client = envelope.AuthenticatedAs ?? "",
            At = envelope.ArrivedAt,
            Sender = envelope.Sender,
            Priority = envelope.Priority,
            Rcpts = envelope.Recipients.Select(r => new StoredRecipient(r.Address, r.Schedule, r.Queue)).ToList(),
        };
        var entry = new MessageEntry(e.Client, envelope.ArrivedAt.UtcTicks, envelope.Recipients.Count);
        _messages[envelope.Id] = entry;
        return entry.AcceptedDurable = AppendEventLocked(e, entry);
    }

    private Task AppendEventLocked(StoredEvent e, MessageEntry entry)
    {
        e.Seq = ++_sequence;
        return AppendLocked(EventRecords.Event(e), new Pending(e, entry));
    }

    /// <summary>Applies one durable event to the index (writer after fsync, or replay).</summary>
    private void ApplyDurableLocked(StoredEvent e, long segment, long offset, MessageEntry? entry)
    {
        if (e.Seq > _lastDurableSeq) _lastDurableSeq = e.Seq;
        if (entry is null && !_messages.TryGetValue(e.Msg, out entry))
        {
            if (e.Type != DeliveryEventType.Accepted) return;   // its message was purged meanwhile
            entry = new MessageEntry(e.Client, e.At.UtcTicks, e.Rcpts?.Count ?? 0);
            _messages[e.Msg] = entry;
        }
        else if (!ReferenceEquals(_messages.GetValueOrDefault(e.Msg), entry)) return;   // purged, or replaced after a failed write
        entry.Positions.Add(segment << OffsetBits | offset);
        if (entry.LastSegment != segment)
        {
            entry.LastSegment = segment;
            if (FindSegment(segment) is { } s) s.Live++;
        }
        if (e.Type == DeliveryEventType.Requeued && e.Rcpt >= 0 && e.Rcpt < entry.Final.Length && entry.Final[e.Rcpt])
        {
            // Pending again: its next attempts are recorded, and the message is unfinished until it is final again.
            entry.Final[e.Rcpt] = false;
            entry.Remaining++;
            entry.FinishedTicks = 0;
        }
        if (e.IsFinal && e.Rcpt >= 0 && e.Rcpt < entry.Final.Length && !entry.Final[e.Rcpt])
        {
            entry.Final[e.Rcpt] = true;
            entry.LastFinalTicks = Math.Max(entry.LastFinalTicks, e.At.UtcTicks);
            if (--entry.Remaining == 0) entry.FinishedTicks = Math.Max(entry.LastFinalTicks, 1);
        }
    }

    private void ForgetLocked(string id)
    {
        if (!_messages.Remove(id, out var entry)) return;
        long last = -1;
        foreach (var p in entry.Positions)
        {
            var seg = p >> OffsetBits;
            if (seg == last) continue;
            last = seg;
            if (FindSegment(seg) is { } s) s.Live--;
        }
    }

    private Segment? FindSegment(long no)
    {
        // Few segments (retention / segment size); newest are hit most.
        for (var i = _segments.Count - 1; i >= 0; i--)
        {
            if (_segments[i].No == no) return _segments[i];
            if (_segments[i].No < no) break;
        }
        return null;
    }

    private int DeleteUnusedSegments()
    {
        var doomed = new List<long>();
        lock (_gate)
        {
            while (_segments.Count > 1 && _segments[0].Live <= 0)
            {
                doomed.Add(_segments[0].No);
                _segments.RemoveAt(0);
            }
        }
        foreach (var no in doomed)
        {
            try { File.Delete(SegmentPath(no)); }
            catch (IOException e) { _log.PurgeFailed(e.Message); }
        }
        if (doomed.Count > 0) SpoolFiles.SyncDirectory(_dir);
        return doomed.Count;
    }

    // ================================================================ reading

    private string SegmentPath(long no) => Path.Combine(_dir, $"{no:D12}.events");

    private List<StoredEvent> ReadAt(long[] positions)
    {
        var events = new List<StoredEvent>(positions.Length);
        FileStream? fs = null;
        long openNo = -1;
        var header = new byte[EventFiles.FrameHeader];
        try
        {
            foreach (var p in positions)
            {
                var no = p >> OffsetBits;
                var offset = p & ((1L << OffsetBits) - 1);
                if (no != openNo)
                {
                    fs?.Dispose();
                    fs = null;
                    openNo = no;
                    try { fs = EventFiles.OpenRead(SegmentPath(no)); }
                    catch (FileNotFoundException) { continue; }
                }
                if (fs is null) continue;
                fs.Position = offset;
                fs.ReadExactly(header);
                var len = BinaryPrimitives.ReadInt32LittleEndian(header);
                var payload = new byte[len];
                fs.ReadExactly(payload);
                if (Crc32.HashToUInt32(payload) != BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4))) continue;
                events.Add(EventRecords.ReadEvent(payload));
            }
        }
        finally { fs?.Dispose(); }
        return events;
    }

    /// <summary>A reader's place in the log (for the webhook dispatcher): the next frame to read.</summary>
    internal struct Position
    {
        public long Segment;
        public long Offset;   // 0 = at the start of the segment
    }

    /// <summary>Where to start reading to find the first event after <paramref name="afterSequence"/>.</summary>
    internal Position Seek(long afterSequence)
    {
        lock (_gate)
        {
            var start = _segments[0].No;
            foreach (var s in _segments)
            {
                if (s.BaseSeq <= afterSequence) start = s.No;
                else break;
            }
            return new Position { Segment = start };
        }
    }

    /// <summary>
    /// Reads durable events after <paramref name="afterSequence"/> for <paramref name="client"/> from
    /// <paramref name="position"/> on, at most <paramref name="max"/>, advancing the position. A segment purged
    /// under the reader is skipped (its events are past retention).
    /// </summary>
    internal List<DeliveryEvent> ReadAfter(ref Position position, long afterSequence, string client, int max)
    {
        var result = new List<DeliveryEvent>();
        while (result.Count < max)
        {
            long limit;
            bool isActive;
            Segment? seg;
            lock (_gate)
            {
                seg = null;
                foreach (var s in _segments)
                {
                    if (s.No >= position.Segment) { seg = s; break; }
                }
                if (seg is null) return result;
                if (seg.No != position.Segment) position = new Position { Segment = seg.No };
                isActive = ReferenceEquals(seg, _segments[^1]);
                limit = isActive ? _durableLength : long.MaxValue;
            }
            var reachedEnd = ReadSegmentFrom(ref position, limit, afterSequence, client, max, result);
            if (!reachedEnd || isActive) return result;
            position = new Position { Segment = position.Segment + 1 };
        }
        return result;
    }

    /// <summary>Returns true when the reader reached the end of the segment (torn or missing tail included).</summary>
    private bool ReadSegmentFrom(ref Position position, long limit, long afterSequence, string client, int max, List<DeliveryEvent> result)
    {
        FileStream fs;
        try { fs = EventFiles.OpenRead(SegmentPath(position.Segment)); }
        catch (FileNotFoundException) { return true; }
        using (fs)
        {
            var end = Math.Min(fs.Length, limit);
            if (position.Offset < HeaderLength) position.Offset = HeaderLength;
            fs.Position = position.Offset;
            var header = new byte[EventFiles.FrameHeader];
            while (result.Count < max)
            {
                if (position.Offset + EventFiles.FrameHeader > end) return position.Offset >= end || limit == long.MaxValue;
                fs.ReadExactly(header);
                var len = BinaryPrimitives.ReadInt32LittleEndian(header);
                if (len <= 0 || len > EventFiles.MaxRecord || position.Offset + EventFiles.FrameHeader + len > end) return true;   // torn tail of an old segment
                var payload = new byte[len];
                fs.ReadExactly(payload);
                if (Crc32.HashToUInt32(payload) != BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4))) return true;
                position.Offset += EventFiles.FrameHeader + len;
                if (payload[0] != EventRecords.KindEvent) continue;
                var e = EventRecords.ReadEvent(payload);
                if (e.Seq > afterSequence && e.Client == client) result.Add(e.ToPublic());
            }
            return false;
        }
    }

    // ================================================================ recovery

    private void Recover()
    {
        SpoolFiles.CreatePrivateDirectory(_dir);
        foreach (var tmp in System.IO.Directory.EnumerateFiles(_dir, "*.tmp")) File.Delete(tmp);
        var numbers = System.IO.Directory.EnumerateFiles(_dir, "*.events")
            .Select(p => long.TryParse(Path.GetFileNameWithoutExtension(p), out var n) ? n : -1)
            .Where(n => n >= 0).Order().ToList();
        long maxSeq = 0;
        foreach (var no in numbers)
        {
            var baseSeq = ReplaySegment(no);
            maxSeq = Math.Max(maxSeq, Math.Max(baseSeq, _lastDurableSeq));
        }
        _sequence = _lastWrittenSeq = _lastDurableSeq = maxSeq;
        _log.Opened(_dir, _messages.Count, maxSeq, _segments.Count);
    }

    /// <summary>Replays one segment into the index; returns its base sequence.</summary>
    private long ReplaySegment(long no)
    {
        var path = SegmentPath(no);
        using var fs = EventFiles.OpenRead(path);
        var length = fs.Length;
        var head = new byte[HeaderLength];
        if (length < HeaderLength || fs.Read(head) < HeaderLength || BinaryPrimitives.ReadUInt32LittleEndian(head) != SegmentMagic)
        {
            // A segment torn while its header was written holds nothing; keep the file out of the way.
            if (length > 0) _log.CorruptRecord(path, 0, length);
            fs.Dispose();
            File.Delete(path);
            return 0;
        }
        var baseSeq = BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(8));
        var segment = new Segment(no, baseSeq);
        _segments.Add(segment);
        var rest = new byte[length - HeaderLength];
        fs.ReadExactly(rest);
        var pos = 0;
        while (pos < rest.Length)
        {
            if (TryFrame(rest, pos, out var payload))
            {
                ApplyReplayed(payload, no, HeaderLength + pos);
                pos += EventFiles.FrameHeader + payload.Length;
                continue;
            }
            var next = Resync(rest, pos + 1);
            if (next < 0)
            {
                _log.TornTail(path, HeaderLength + pos, rest.Length - pos);   // a crash mid-write; nothing whole follows
                break;
            }
            _log.CorruptRecord(path, HeaderLength + pos, next - pos);
            pos = next;
        }
        return baseSeq;
    }

    private static bool TryFrame(byte[] data, int pos, out ReadOnlySpan<byte> payload)
    {
        payload = default;
        if (pos + EventFiles.FrameHeader > data.Length) return false;
        var len = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(pos));
        if (len <= 0 || len > EventFiles.MaxRecord || pos + EventFiles.FrameHeader + len > data.Length) return false;
        var p = data.AsSpan(pos + EventFiles.FrameHeader, len);
        if (!EventRecords.KnownKind(p[0]) || Crc32.HashToUInt32(p) != BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(pos + 4))) return false;
        payload = p;
        return true;
    }

    private static int Resync(byte[] data, int from)
    {
        for (var i = from; i + EventFiles.FrameHeader < data.Length; i++)
        {
            if (TryFrame(data, i, out _)) return i;
        }
        return -1;
    }

    private void ApplyReplayed(ReadOnlySpan<byte> payload, long segment, long offset)
    {
        try
        {
            if (payload[0] == EventRecords.KindPurge)
            {
                foreach (var id in EventRecords.ReadPurge(payload)) ForgetLocked(id);
                return;
            }
            ApplyDurableLocked(EventRecords.ReadEvent(payload), segment, offset, null);
        }
        catch (System.Text.Json.JsonException e) { _log.CorruptRecord(SegmentPath(segment), offset, payload.Length + (long)EventFiles.FrameHeader); _ = e; }
    }

    // ================================================================ writing (group commit)

    private readonly record struct Pending(StoredEvent Event, MessageEntry Entry)
    {
        public int Offset { get; init; }
    }

    private sealed class Batch
    {
        public readonly ArrayBufferWriter<byte> Buffer = new(16 * 1024);
        public readonly List<Pending> Events = [];
        public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Count;
    }

    private Task AppendLocked(byte[] payload, Pending? pending)
    {
        if (_stopping) return Task.FromException(new IOException("event log is shut down"));
        var b = _current;
        var offset = b.Buffer.WrittenCount;
        EventFiles.WriteFrame(b.Buffer, payload);
        if (pending is { } p) b.Events.Add(p with { Offset = offset });
        b.Count++;
        _signal.Set();
        return b.Done.Task;
    }

    private void StartWriter()
    {
        OpenSegment(_segments.Count == 0 ? 1 : _segments[^1].No + 1, _lastWrittenSeq);
        _writer = new Thread(WriterLoop) { IsBackground = true, Name = "event-log" };
        _writer.Start();
        if (_options.PurgeInterval is { } every)
            _purgeTimer = _clock.CreateTimer(_ => _ = PurgeInBackgroundAsync(), null, every, every);
    }

    /// <summary>Never appends behind an old (maybe torn) tail: every open and every rotation starts a new file.</summary>
    private void OpenSegment(long no, long baseSeq)
    {
        var fs = EventFiles.CreateNew(SegmentPath(no));
        var header = new byte[HeaderLength];
        BinaryPrimitives.WriteUInt32LittleEndian(header, SegmentMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(4), 1);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(8), baseSeq);
        fs.Write(header);
        fs.Flush(flushToDisk: true);
        SpoolFiles.SyncDirectory(_dir);
        var old = _active;
        lock (_gate)
        {
            _segments.Add(new Segment(no, baseSeq));
            _active = fs;
            _durableLength = HeaderLength;
        }
        old?.Dispose();
    }

    private void WriterLoop()
    {
        while (true)
        {
            _signal.WaitOne();
            Batch batch;
            lock (_gate)
            {
                batch = _current;
                if (batch.Count > 0) _current = new Batch();
            }
            if (batch.Count > 0) WriteBatch(batch);
            if (_stopping) break;
        }
        lock (_gate)
        {
            if (_current.Count > 0) WriteBatch(_current);
        }
        _active?.Dispose();
    }

    private void WriteBatch(Batch batch)
    {
        try
        {
            if (_options.Fault?.Invoke() is { } fault) throw fault;
            if (_active!.Length >= _options.SegmentBytes) OpenSegment(NextSegmentNo(), _lastWrittenSeq);
            var start = _active!.Length;
            _active.Write(batch.Buffer.WrittenSpan);
            _active.Flush(flushToDisk: true);
            Interlocked.Increment(ref _syncCount);
            lock (_gate)
            {
                var no = _segments[^1].No;
                foreach (var p in batch.Events)
                {
                    ApplyDurableLocked(p.Event, no, start + p.Offset, p.Entry);
                    _lastWrittenSeq = Math.Max(_lastWrittenSeq, p.Event.Seq);
                }
                _durableLength = _active.Length;
            }
            batch.Done.TrySetResult();
            if (batch.Events.Count > 0) Appended?.Invoke();
        }
        catch (Exception e)
        {
            _log.WriteFailed(e.Message);
            lock (_gate)
            {
                // A message whose accepted event was lost is forgotten, so the next append records it again.
                foreach (var p in batch.Events)
                {
                    if (p.Event.Type == DeliveryEventType.Accepted && _messages.TryGetValue(p.Event.Msg, out var m) && ReferenceEquals(m, p.Entry) && m.Positions.Count == 0)
                        _messages.Remove(p.Event.Msg);
                }
            }
            batch.Done.TrySetException(new IOException("event log write failed: " + e.Message, e));
            // The segment may now end in a torn record; continue in a fresh one (replay skips the tear).
            try { OpenSegment(NextSegmentNo(), _lastWrittenSeq); }
            catch (Exception e2) { _log.WriteFailed("cannot open a new segment: " + e2.Message); }
        }
    }

    private long NextSegmentNo()
    {
        lock (_gate) return _segments[^1].No + 1;   // the purge may be removing the oldest entry meanwhile
    }

    private async Task PurgeInBackgroundAsync()
    {
        try { await PurgeAsync(_clock.GetUtcNow(), CancellationToken.None); }
        catch (Exception e) { _log.PurgeFailed(e.Message); }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stopping) return;
        if (_purgeTimer is not null) await _purgeTimer.DisposeAsync();
        await _purgeLock.WaitAsync();
        lock (_gate) _stopping = true;   // under the lock: no append slips in behind the writer's last batch
        _signal.Set();
        if (_writer is not null) await Task.Run(_writer.Join);
        _purgeLock.Release();            // a late PurgeAsync now fails fast (appends refuse) instead of waiting forever
    }
}
