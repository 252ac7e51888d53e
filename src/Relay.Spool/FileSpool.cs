// FileSpool: the default spool. Message bytes and envelope live in one file per message (msg/<shard>/<id>);
// every recipient-state change is a record in the group-committed journal (journal/*.log), replayed at start.
// See README.md for the design and why.
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.IO.Enumeration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Config.Settings;

namespace Relay.Spool;

public sealed class FileSpool : ISpoolStore
{
    private const string Hex = "0123456789abcdef";

    private readonly object _gate = new();
    private readonly Dictionary<ulong, SpooledMessage> _index = [];
    private readonly Dictionary<string, StrongBoxLong> _pendingByQueue = new(StringComparer.Ordinal);
    private readonly Dictionary<(string, string), Route> _routes = [];
    private readonly Dictionary<string, string> _domains = new(StringComparer.Ordinal);
    // Each dead letter with the finalized time it was queued with: a requeued and failed-again message is queued
    // again, and its older entry (whose time no longer matches) is skipped rather than holding up the purge.
    private readonly Queue<(SpooledMessage Message, long FinalizedTicks)> _deadLetters = new();
    private readonly Queue<SpooledMessage> _handoff = new();
    private readonly List<SpooledMessage> _rescued = [];   // recovery only: rebuilt from Body records
    private readonly SpoolJournal _journal;
    private readonly FileSpoolOptions _options;
    private readonly TimeProvider _clock;
    private readonly ILogger _log;
    private readonly string _msgDir;
    private readonly string _quarantineDir;
    private long _sequence;
    private int _handoffPeak;
    private int _idCounter = Random.Shared.Next(0x100000);
    private bool _disposed;

    private sealed class StrongBoxLong { public long Value; }

    private FileSpool(string root, FileSpoolOptions options, TimeProvider clock, ILogger log)
    {
        Root = root;
        _options = options;
        _clock = clock;
        _log = log;
        _msgDir = Path.Combine(root, "msg");
        _quarantineDir = Path.Combine(root, "quarantine");
        var journalDir = Path.Combine(root, "journal");
        SpoolFiles.CreatePrivateDirectory(root);
        SpoolFiles.CreatePrivateDirectory(_msgDir);
        foreach (var c in Hex) SpoolFiles.CreatePrivateDirectory(Path.Combine(_msgDir, c.ToString()));
        SpoolFiles.CreatePrivateDirectory(journalDir);
        SpoolFiles.CreatePrivateDirectory(_quarantineDir);
        _journal = new SpoolJournal(journalDir, _quarantineDir, _gate, options, log);
    }

    /// <summary>The spool's root folder.</summary>
    public string Root { get; }

    /// <summary>Journal fsyncs so far (ingest benchmark: commits per fsync shows group commit at work).</summary>
    public long JournalSyncs => Interlocked.Read(ref _journal.SyncCount);

    public event Action? Committed;

    /// <summary>
    /// Opens (creating if needed) the spool at <paramref name="path"/> and recovers its state: replays the
    /// journal, drops message files that were never acknowledged, and queues every message for
    /// <see cref="TakeCommitted"/>. Damaged entries are quarantined and logged; they never stop the open.
    /// </summary>
    public static FileSpool Open(string path, FileSpoolOptions? options = null, TimeProvider? clock = null, ILogger? logger = null)
    {
        var spool = new FileSpool(Path.GetFullPath(path), options ?? new FileSpoolOptions(), clock ?? TimeProvider.System,
                                  logger ?? NullLogger.Instance);
        spool.Recover();
        return spool;
    }

    /// <summary>Opens the spool described by <c>[spool]</c>.</summary>
    public static FileSpool Open(SpoolSettings settings, TimeProvider? clock = null, ILogger? logger = null) =>
        Open(settings.Path, new FileSpoolOptions { Retention = settings.Retention }, clock, logger);

    // ---------------------------------------------------------------- recovery

    private void Recover()
    {
        var started = Stopwatch.GetTimestamp();
        var bodies = new Dictionary<string, (int Segment, long Offset)>(StringComparer.Ordinal);
        foreach (var (payload, segment, offset) in _journal.Replay()) ApplyRecord(payload, segment, offset, bodies);
        SweepMessageFiles();
        RescueInline(bodies);
        PointAtDamagedBodies();
        long pending = 0;
        var live = new SpooledMessage[_index.Count];   // sorted in place: no LINQ buffers at a million messages
        _index.Values.CopyTo(live, 0);
        Array.Sort(live, static (a, b) => a.Sequence.CompareTo(b.Sequence));
        _handoff.EnsureCapacity(live.Length);
        var dead = new List<SpooledMessage>();
        foreach (var m in live)
        {
            foreach (ref readonly var s in m.Slots.AsSpan())
            {
                if (s.Status != RecipientStatus.Pending) continue;
                PendingBox(s.Route.Queue).Value++;
                pending++;
            }
            if (m.FinalizedTicks != 0) dead.Add(m);
            else _handoff.Enqueue(m);
        }
        // The purge walks dead letters in the order their retention ends (commit order is not that order).
        dead.Sort(static (a, b) => a.FinalizedTicks.CompareTo(b.FinalizedTicks));
        foreach (var m in dead) _deadLetters.Enqueue((m, m.FinalizedTicks));
        _journal.Start(WriteSnapshot, damaged =>
            // On the compaction's task, before it deletes the old segment that still holds the damaged bytes.
            QuarantineAsync(damaged.Id, "message record checksum mismatch (found by compaction)", default).AsTask().Wait());
        _log.Opened(Root, _index.Count, pending, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    private void ApplyRecord(byte[] payload, int segment, long offset, Dictionary<string, (int, long)> bodies)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(payload, 0, payload.Length, false, true));
            var type = (RecordType)r.ReadByte();
            switch (type)
            {
                case RecordType.Message:
                {
                    var m = ReadMessage(r);
                    // Its bytes: the Body record just before it (commit); else, for a Message record that replaces
                    // the entry (requeue), where the entry had them; a snapshot's Body records follow and link below.
                    if (bodies.Remove(m.Id, out var at)) (m.BodySegment, m.BodyOffset) = at;
                    else if (_index.TryGetValue(m.Key, out var old)) (m.BodySegment, m.BodyOffset) = (old.BodySegment, old.BodyOffset);
                    _index[m.Key] = m;
                    break;
                }
                case RecordType.Body:
                {
                    var id = JournalRecords.BodyId(payload);
                    if (TryGet(id, out var m)) (m.BodySegment, m.BodyOffset) = (segment, offset);
                    else bodies[id] = (segment, offset);
                    break;
                }
                case RecordType.Update:
                {
                    var id = r.ReadString();
                    var n = r.Read7BitEncodedInt();
                    var target = Known(id, bodies);
                    for (var i = 0; i < n; i++)
                    {
                        var index = r.Read7BitEncodedInt();
                        var slot = new Slot();
                        JournalRecords.ReadState(r, ref slot);
                        if (target is null || (uint)index >= (uint)target.Slots.Length) continue;
                        ref var s = ref target.Slots[index];
                        s.Status = slot.Status; s.Attempts = slot.Attempts; s.NextTicks = slot.NextTicks;
                        s.NotifySent = slot.NotifySent; s.Reported = slot.Reported; s.Error = slot.Error;
                    }
                    break;
                }
                case RecordType.Remove:
                case RecordType.Quarantine:
                {
                    var id = JournalRecords.ReadIdRecord(r).Id;
                    Unindex(id);
                    bodies.Remove(id);   // gone for good: its body must not be rescued as lost mail
                    break;
                }
                case RecordType.Reroute:
                {
                    var id = r.ReadString();
                    var n = r.Read7BitEncodedInt();
                    var target = Known(id, bodies);
                    for (var i = 0; i < n; i++)
                    {
                        var index = r.Read7BitEncodedInt();
                        var schedule = r.ReadString();
                        var queue = r.ReadString();
                        if (target is null || (uint)index >= (uint)target.Slots.Length) continue;
                        target.Slots[index].Route = InternRoute(schedule, queue);
                    }
                    break;
                }
                case RecordType.DeadLetter:
                {
                    var (id, ticks, _) = JournalRecords.ReadIdRecord(r);
                    if (Known(id, bodies) is { } dead) dead.FinalizedTicks = ticks;
                    break;
                }
            }
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or ArgumentException or FormatException)
        {
            // Checksummed, yet not parseable: a bug or a foreign file. Skip the record, keep going.
            _log.SegmentUnreadable("(record)", e.Message);
        }
    }

    private SpooledMessage ReadMessage(BinaryReader r)
    {
        var id = MessageId.Parse(r.ReadString());
        var arrived = r.ReadInt64();
        var priority = r.ReadSByte();
        var finalized = r.ReadInt64();
        var n = r.Read7BitEncodedInt();
        var slots = new Slot[n];
        for (var i = 0; i < n; i++)
        {
            slots[i].Domain = InternDomain(r.ReadString());
            var schedule = r.ReadString();
            var queue = r.ReadString();
            slots[i].Route = InternRoute(schedule, queue);
            JournalRecords.ReadState(r, ref slots[i]);
        }
        return new SpooledMessage(_gate, id, arrived, priority, ++_sequence, slots) { FinalizedTicks = finalized };
    }

    /// <summary>
    /// Message files the journal does not know: normally written but never acknowledged (crash before the
    /// journal fsync), so deleted. When the journal was damaged or missing, they may be acknowledged mail
    /// whose record was lost: then they are rescued from their own envelope instead.
    /// </summary>
    private void SweepMessageFiles()
    {
        var rescue = _journal.HadCorruption || _journal.WasEmpty;
        var deleted = 0;
        foreach (var c in Hex)
        {
            var dir = Path.Combine(_msgDir, c.ToString());
            var orphans = new FileSystemEnumerable<string>(dir, (ref FileSystemEntry e) => e.ToFullPath())
            {
                ShouldIncludePredicate = (ref FileSystemEntry e) => !e.IsDirectory && !(MessageId.TryParse(e.FileName, out var key) && _index.ContainsKey(key)),
            };
            foreach (var file in orphans)
            {
                if (rescue && TryRescue(file)) continue;
                try { File.Delete(file); deleted++; }
                catch (IOException e) { _log.DeleteFailed(Path.GetFileName(file), e.Message); }
            }
        }
        if (deleted > 0) _log.OrphansDeleted(deleted);
    }

    private bool TryRescue(string file)
    {
        try
        {
            using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
            var (envelope, _) = MessageFile.ReadEnvelope(fs);
            if (envelope.Id != Path.GetFileName(file) || !MessageId.TryParse(envelope.Id, out var key)) return false;
            var m = new SpooledMessage(_gate, key, QueuedSince(envelope), envelope.Priority, ++_sequence, SlotsFor(envelope));
            _index[m.Key] = m;
            _journal.Append(JournalRecords.Message(m), null);   // written once the journal starts
            _log.Rescued(m.Id);
            return true;
        }
        catch (IOException e)
        {
            _log.Quarantined(Path.GetFileName(file), e.Message);
            MoveToQuarantine(file, Path.GetFileName(file), e.Message);
            return true;
        }
    }

    /// <summary>
    /// The message a state record names. One that is not indexed but whose Body was seen lost its Message record
    /// (damage): it is rebuilt from its body now, so that this record and every later one (delivered recipients,
    /// a removal) still apply to it.
    /// </summary>
    private SpooledMessage? Known(string id, Dictionary<string, (int Segment, long Offset)> bodies)
    {
        if (TryGet(id, out var m)) return m;
        return bodies.Remove(id, out var at) ? RescueFromBody(id, at.Segment, at.Offset) : null;
    }

    private SpooledMessage? RescueFromBody(string id, int segment, long offset)
    {
        if (!MessageId.TryParse(id, out var key)) return null;
        try
        {
            var payload = _journal.ReadBody(segment, offset);
            var (envelope, _) = MessageFile.ReadEnvelope(payload.AsSpan(JournalRecords.BodyImageStart), id);
            if (envelope.Id != id) return null;
            var m = new SpooledMessage(_gate, key, QueuedSince(envelope), envelope.Priority, ++_sequence, SlotsFor(envelope))
            {
                BodySegment = segment,
                BodyOffset = offset,
            };
            _index[m.Key] = m;
            _rescued.Add(m);
            return m;
        }
        catch (IOException e)
        {
            // Its body is damaged too: nothing to rebuild. The segment's damage is already copied to quarantine/.
            _log.SegmentUnreadable($"{id} (lost message record)", e.Message);
            return null;
        }
    }

    /// <summary>
    /// After replay: Body records still without a Message record are normally a torn tail (never acknowledged,
    /// ignored). When the journal was damaged, one may be acknowledged mail whose record was lost: rescued, as
    /// files are. Every rescued message still queued is journaled again with its full state.
    /// </summary>
    private void RescueInline(Dictionary<string, (int Segment, long Offset)> bodies)
    {
        if (_journal.HadCorruption)
        {
            foreach (var (id, (segment, offset)) in bodies)
            {
                if (!TryGet(id, out _)) RescueFromBody(id, segment, offset);
            }
        }
        foreach (var m in _rescued)
        {
            if (!_index.TryGetValue(m.Key, out var now) || !ReferenceEquals(now, m)) continue;   // removed (or replaced) later in the journal
            _journal.Append(JournalRecords.Message(m), null);   // written once the journal starts; the Body stays where it is
            _log.Rescued(m.Id);
        }
        _rescued.Clear();
    }

    /// <summary>
    /// A message whose Body record was damaged is left with no body (and no file): point it at the damaged record,
    /// so that a read quarantines it with the bytes it still has instead of reporting a missing file.
    /// </summary>
    private void PointAtDamagedBodies()
    {
        foreach (var (id, segment, offset) in _journal.DamagedBodies)
        {
            if (!TryGet(id, out var m) || m.BodySegment != 0 || File.Exists(PathOf(id))) continue;
            (m.BodySegment, m.BodyOffset) = (segment, offset);
        }
        _journal.DamagedBodies.Clear();
    }

    private List<SpooledMessage> WriteSnapshot(Action<byte[]> emit)
    {
        // Called by the journal with _gate held; returns the inline messages whose bodies it must copy.
        var live = new List<SpooledMessage>(_index.Values);
        live.Sort((a, b) => a.Sequence.CompareTo(b.Sequence));   // replay order = FIFO order
        var inline = new List<SpooledMessage>();
        foreach (var m in live)
        {
            if (m.BodySegment < 0) continue;   // its commit's journal write failed: it is about to be dropped
            emit(JournalRecords.Message(m));
            if (m.BodySegment > 0) inline.Add(m);
        }
        return inline;
    }

    // ---------------------------------------------------------------- writing

    public IIncomingMessage Begin()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        for (var tries = 0; ; tries++)
        {
            var id = NewId();
            var path = PathOf(id);
            try
            {
                if (_options.Fault?.Invoke("data") is { } fault) throw fault;
                if (_options.InlineLimit > 0)
                {
                    // Its file, if it ever needs one, is created when it outgrows the limit (CreateNew still
                    // refuses an id in use then); an id the index already holds is skipped here.
                    lock (_gate) if (_index.ContainsKey(MessageId.Parse(id))) continue;
                    return new IncomingMessage(this, id, path, null, Math.Min(_options.InlineLimit, 16 << 20));
                }
                return new IncomingMessage(this, id, path, SpoolFiles.CreateNew(path), 0);
            }
            catch (IOException) when (File.Exists(path) && tries < 8) { }   // id collision: take the next one
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                _log.CommitFailed(id, e.Message);
                throw new SpoolWriteException("cannot create a spool file: " + e.Message, e);
            }
        }
    }

    private string NewId()
    {
        // 11 hex digits of Unix milliseconds, then a 20-bit counter: ids sort by arrival, unique within a node.
        var ms = _clock.GetUtcNow().ToUnixTimeMilliseconds();
        var n = Interlocked.Increment(ref _idCounter) & 0xFFFFF;
        return $"{ms:x11}{n:x5}";
    }

    private string PathOf(string id) => Path.Combine(_msgDir, id[^1].ToString(), id);

    // The index is keyed by the id's numeric form; a string that is not a queue id is simply not there.
    private bool TryGet(string id, [NotNullWhen(true)] out SpooledMessage? m)
    {
        m = null;
        return MessageId.TryParse(id, out var key) && _index.TryGetValue(key, out m);
    }

    private void Unindex(string id)
    {
        if (MessageId.TryParse(id, out var key)) _index.Remove(key);
    }

    /// <summary>
    /// Where the message's time in the queue starts (<see cref="SpooledMessage.ArrivedAt"/>: expire and notify count
    /// from it): its arrival, or the end of its hold when an API client's rate held it (a held message must not
    /// expire or draw a delay notice because of its hold). The envelope keeps the real arrival (Received, DSN).
    /// </summary>
    private static long QueuedSince(MessageEnvelope envelope) =>
        Math.Max(envelope.ArrivedAt.UtcTicks, envelope.NotBefore?.UtcTicks ?? 0);

    private Slot[] SlotsFor(MessageEnvelope envelope)
    {
        var slots = new Slot[envelope.Recipients.Count];
        for (var i = 0; i < slots.Length; i++)
        {
            var r = envelope.Recipients[i];
            var at = r.Address.LastIndexOf('@');
            slots[i] = new Slot
            {
                Domain = InternDomain(at < 0 ? "" : r.Address[(at + 1)..].ToLowerInvariant()),
                Route = InternRoute(r.Schedule, r.Queue),
                Status = RecipientStatus.Pending,
                NextTicks = envelope.NotBefore?.UtcTicks ?? 0,   // held mail: its first due time, journaled with it
            };
        }
        return slots;
    }

    /// <summary>
    /// Indexes the message and waits for its group commit: with <paramref name="inline"/> (a Body record) the
    /// bytes go into the journal itself; else <paramref name="file"/> and its directory are fsynced with the batch.
    /// </summary>
    internal async Task CommitAsync(IncomingMessage incoming, MessageEnvelope envelope, FileStream? file, byte[]? inline)
    {
        var slots = SlotsFor(envelope);
        SpooledMessage m;
        Task durable;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            m = new SpooledMessage(_gate, MessageId.Parse(incoming.Id), QueuedSince(envelope), envelope.Priority, ++_sequence, slots);
            _index[m.Key] = m;
            foreach (var s in slots) PendingBox(s.Route.Queue).Value++;
            if (inline is not null)
            {
                m.BodySegment = -1;   // the journal writer sets where once the batch is durable
                durable = _journal.AppendInline(inline, m, JournalRecords.Message(m));
            }
            else durable = _journal.Append(JournalRecords.Message(m), Path.GetDirectoryName(incoming.Path), file);
        }
        try
        {
            await durable;
        }
        catch (SpoolWriteException)
        {
            lock (_gate)
            {
                _index.Remove(m.Key);
                foreach (var s in slots) PendingBox(s.Route.Queue).Value--;
            }
            throw;
        }
        lock (_gate) _handoff.Enqueue(m);
        Committed?.Invoke();
    }

    internal Exception? Fault(string what) => _options.Fault?.Invoke(what);

    // ---------------------------------------------------------------- reading

    public IReadOnlyList<SpooledMessage> TakeCommitted(int max)
    {
        lock (_gate)
        {
            _handoffPeak = Math.Max(_handoffPeak, _handoff.Count);
            var n = Math.Min(max, _handoff.Count);
            var list = new SpooledMessage[n];
            for (var i = 0; i < n; i++) list[i] = _handoff.Dequeue();
            if (_handoff.Count == 0 && _handoffPeak > 4096)
            {
                _handoff.TrimExcess();   // recovery filled it with the whole queue: give that array back
                _handoffPeak = 0;
            }
            return list;
        }
    }

    public SpooledMessage? Find(string id)
    {
        lock (_gate) return TryGet(id, out var m) ? m : null;
    }

    public IReadOnlyList<QueuedMessage> List(string? afterId, int limit)
    {
        List<SpooledMessage> page;
        lock (_gate)
        {
            // Fixed-width lowercase hex: numeric order is the ids' ordinal order.
            var byKey = MessageId.TryParse(afterId, out var after);
            page = _index.Values.Where(m => afterId is null || (byKey ? m.Key > after : string.CompareOrdinal(MessageId.Format(m.Key), afterId) > 0))
                .OrderBy(m => m.Key).Take(limit).ToList();
        }
        return page.Select(m => m.Snapshot()).ToList();
    }

    /// <summary>Messages in the spool (live and dead letters).</summary>
    public int Count
    {
        get { lock (_gate) return _index.Count; }
    }

    public long CountPending(string queue)
    {
        lock (_gate) return _pendingByQueue.TryGetValue(queue, out var box) ? box.Value : 0;
    }

    public async ValueTask<MessageEnvelope> ReadEnvelopeAsync(string id, CancellationToken cancellationToken)
    {
        using var file = await OpenCheckedAsync(id, cancellationToken);
        return file.Envelope;
    }

    public ValueTask<MessageEnvelope?> TryReadEnvelopeAsync(string id, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        try
        {
            using var file = OpenUnchecked(id);
            return ValueTask.FromResult<MessageEnvelope?>(file.Envelope);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return ValueTask.FromResult<MessageEnvelope?>(null);
        }
    }

    public async ValueTask<Stream> OpenContentAsync(string id, CancellationToken cancellationToken)
    {
        var file = await OpenCheckedAsync(id, cancellationToken);
        return file.Stream as MemoryStream ?? (Stream)new BodyStream((FileStream)file.Stream, file.BodyLength);
    }

    private sealed record CheckedFile(Stream Stream, MessageEnvelope Envelope, long BodyLength) : IDisposable
    {
        public void Dispose() => Stream.Dispose();
    }

    /// <summary>Opens the message (its Body record or its file) and reads its envelope; throws on any problem, quarantines nothing.</summary>
    private CheckedFile OpenUnchecked(string id)
    {
        for (var tries = 0; ; tries++)
        {
            int segment;
            long offset;
            lock (_gate)
            {
                if (!TryGet(id, out var m)) break;   // gone (or never here): look for a file, which reports it missing
                segment = Volatile.Read(ref m.BodySegment);   // acquire: pairs with the journal writer's release
                offset = m.BodyOffset;
            }
            if (segment == 0) break;
            if (segment < 0) throw new SpoolNotReadyException($"{id}: not committed yet");
            try
            {
                var payload = _journal.ReadBody(segment, offset);
                if (JournalRecords.BodyId(payload) != id) throw new SpoolCorruptException($"{id}: its journal record names another message");
                var (envelope, bodyLength) = MessageFile.ReadEnvelope(payload.AsSpan(JournalRecords.BodyImageStart), id);
                if (envelope.Id != id) throw new SpoolCorruptException($"{id}: envelope names {envelope.Id}");
                return new CheckedFile(new MemoryStream(payload.Array!, payload.Offset + JournalRecords.BodyImageStart, (int)bodyLength, writable: false),
                                       envelope, bodyLength);
            }
            catch (FileNotFoundException) when (tries < 3) { }   // a compaction moved it meanwhile: read its new place
        }
        var path = PathOf(id);
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.Asynchronous);
        try
        {
            var (envelope, bodyLength) = MessageFile.ReadEnvelope(fs);
            if (envelope.Id != id) throw new SpoolCorruptException($"{path}: envelope names {envelope.Id}");
            return new CheckedFile(fs, envelope, bodyLength);
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    private async ValueTask<CheckedFile> OpenCheckedAsync(string id, CancellationToken cancellationToken)
    {
        try
        {
            return OpenUnchecked(id);
        }
        catch (Exception e) when (e is IOException and not SpoolNotReadyException || e is UnauthorizedAccessException)
        {
            var reason = e is FileNotFoundException or DirectoryNotFoundException ? "message file missing" : e.Message;
            await QuarantineAsync(id, reason, cancellationToken);
            throw e as SpoolCorruptException ?? new SpoolCorruptException($"{id}: {reason}", e);
        }
    }

    // ---------------------------------------------------------------- state changes

    public async ValueTask UpdateRecipientsAsync(string id, IReadOnlyList<RecipientChange> changes, CancellationToken cancellationToken)
    {
        Task durable;
        lock (_gate)
        {
            if (!TryGet(id, out var m)) return;
            ApplyChanges(m, id, changes);
            durable = _journal.Append(JournalRecords.Update(id, changes), null);
        }
        await durable;
    }

    private void ApplyChanges(SpooledMessage m, string id, IReadOnlyList<RecipientChange> changes)
    {
        // Under _gate.
        foreach (var c in changes)
        {
            if ((uint)c.Index >= (uint)m.Slots.Length) throw new ArgumentOutOfRangeException(nameof(changes), $"recipient {c.Index} of {id}");
            ref var s = ref m.Slots[c.Index];
            var wasPending = s.Status == RecipientStatus.Pending;
            s.Apply(c);
            var isPending = s.Status == RecipientStatus.Pending;
            if (wasPending != isPending) PendingBox(s.Route.Queue).Value += isPending ? 1 : -1;
        }
    }

    public async ValueTask<bool> SettleAsync(string id, IReadOnlyList<RecipientChange> changes, CancellationToken cancellationToken)
    {
        Task durable;
        bool completed, keep = false;
        SpooledMessage? m;
        lock (_gate)
        {
            if (!TryGet(id, out m)) return false;
            ApplyChanges(m, id, changes);
            completed = m.FinalizedTicks == 0 && m.Slots.All(s => s.Status != RecipientStatus.Pending && s.Reported);
            durable = completed ? CompleteLocked(m, id, changes, out keep) : _journal.Append(JournalRecords.Update(id, changes), null);
        }
        await durable;
        if (completed && !keep) DeleteFile(m);
        return completed;
    }

    public async ValueTask CompleteAsync(string id, CancellationToken cancellationToken)
    {
        Task durable;
        bool keep;
        SpooledMessage? m;
        lock (_gate)
        {
            if (!TryGet(id, out m) || m.FinalizedTicks != 0) return;
            durable = CompleteLocked(m, id, null, out keep);
        }
        await durable;
        if (!keep) DeleteFile(m);
    }

    /// <summary>
    /// Under _gate: keeps the message as a dead letter when any recipient failed or expired, else forgets it.
    /// <paramref name="changes"/> (already applied in memory) are journaled only for a dead letter, which keeps
    /// its reasons, in the same group commit as its mark; a removal alone says all there is.
    /// </summary>
    private Task CompleteLocked(SpooledMessage m, string id, IReadOnlyList<RecipientChange>? changes, out bool keep)
    {
        keep = m.Slots.Any(s => s.Status is RecipientStatus.Failed or RecipientStatus.Expired);
        if (!keep)
        {
            Forget(m);
            return _journal.Append(JournalRecords.Remove(id), null);
        }
        if (changes is not null) _journal.Append(JournalRecords.Update(id, changes), null);
        m.FinalizedTicks = _clock.GetUtcNow().UtcTicks;
        _deadLetters.Enqueue((m, m.FinalizedTicks));
        return _journal.Append(JournalRecords.DeadLetter(id, m.FinalizedTicks), null);
    }

    public async ValueTask QuarantineAsync(string id, string reason, CancellationToken cancellationToken)
    {
        Task durable;
        int segment;
        long offset;
        SpooledMessage? m;
        lock (_gate)
        {
            if (!TryGet(id, out m)) return;
            Forget(m);
            segment = Volatile.Read(ref m.BodySegment);
            offset = m.BodyOffset;
            durable = _journal.Append(JournalRecords.Quarantine(id, reason), null);
        }
        _log.Quarantined(id, reason);
        // An inline message leaves what its record holds (body, envelope, footer: a message file's layout) for the
        // operator; a compaction may move it meanwhile (it still updates a removed message), so look again once.
        var raw = segment > 0 ? _journal.ReadRawRecord(segment, offset) : null;
        if (segment > 0 && raw is null)
        {
            lock (_gate) (segment, offset) = (Volatile.Read(ref m.BodySegment), m.BodyOffset);
            raw = _journal.ReadRawRecord(segment, offset);
        }
        if (raw is { Length: > JournalRecords.BodyImageStart })
        {
            try { File.WriteAllBytes(Path.Combine(_quarantineDir, id), raw.AsSpan(JournalRecords.BodyImageStart)); }
            catch (IOException e) { _log.QuarantineFailed(id, e.Message); }
        }
        MoveToQuarantine(PathOf(id), id, reason);
        await durable;
    }

    public async ValueTask<bool> RemoveAsync(string id, CancellationToken cancellationToken)
    {
        Task durable;
        SpooledMessage? m;
        lock (_gate)
        {
            if (!TryGet(id, out m)) return false;
            Forget(m);
            durable = _journal.Append(JournalRecords.Remove(id), null);
        }
        await durable;
        DeleteFile(m);
        return true;
    }

    public async ValueTask<bool> ReopenAsync(string id, IReadOnlyList<int> recipients, DateTimeOffset now, CancellationToken cancellationToken)
    {
        Task durable;
        SpooledMessage m;
        lock (_gate)
        {
            if (!TryGet(id, out var found) || found.FinalizedTicks == 0) return false;
            m = found;
            foreach (var i in recipients.Distinct())
            {
                if ((uint)i >= (uint)m.Slots.Length) throw new ArgumentOutOfRangeException(nameof(recipients), $"recipient {i} of {id}");
                ref var s = ref m.Slots[i];
                if (s.Status == RecipientStatus.Pending) continue;
                var change = new RecipientChange(i, RecipientStatus.Pending, 0, now, s.Error, 0, false);
                s.Apply(change);
                PendingBox(s.Route.Queue).Value++;
            }
            // Live again (the dead-letter queue skips it when its turn comes), and its time in the queue starts over
            // now (expire, notify), as a requeue does in Postfix. One full Message record replaces the old entry.
            m.FinalizedTicks = 0;
            m.ArrivedTicks = now.UtcTicks;
            durable = _journal.Append(JournalRecords.Message(m), null);
        }
        await durable;
        lock (_gate) _handoff.Enqueue(m);
        Committed?.Invoke();
        return true;
    }

    public async ValueTask<RerouteResult> RerouteAsync(Func<string, string, (string Schedule, string Queue)> map,
                                                       CancellationToken cancellationToken)
    {
        var live = new List<SpooledMessage>();
        var moved = 0;
        Task durable = Task.CompletedTask;
        var decided = new Dictionary<Route, Route>();   // thousands of recipients share a handful of routes
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            foreach (var m in _index.Values)
            {
                if (m.FinalizedTicks != 0) continue;
                List<(int, string, string)>? moves = null;
                var pending = false;
                for (var i = 0; i < m.Slots.Length; i++)
                {
                    ref var s = ref m.Slots[i];
                    if (s.Status != RecipientStatus.Pending) continue;
                    pending = true;
                    if (!decided.TryGetValue(s.Route, out var to))
                    {
                        var (schedule, queue) = map(s.Route.Schedule, s.Route.Queue);
                        decided[s.Route] = to = InternRoute(schedule, queue);
                    }
                    if (ReferenceEquals(to, s.Route)) continue;
                    PendingBox(s.Route.Queue).Value--;
                    PendingBox(to.Queue).Value++;
                    s.Route = to;
                    (moves ??= []).Add((i, to.Schedule, to.Queue));
                    moved++;
                }
                if (moves is not null) durable = _journal.Append(JournalRecords.Reroute(m.Id, moves), null);
                if (pending) live.Add(m);
            }
        }
        await durable;
        live.Sort(static (a, b) => a.Sequence.CompareTo(b.Sequence));
        return new RerouteResult(live, moved);
    }

    public async ValueTask<int> PurgeDeadLettersAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        var purged = new List<SpooledMessage>();
        Task durable = Task.CompletedTask;
        lock (_gate)
        {
            while (_deadLetters.TryPeek(out var entry))
            {
                var m = entry.Message;
                // Gone, re-opened by the operator, or re-opened and finalized again (a newer entry stands for it).
                var stale = m.Removed || m.FinalizedTicks != entry.FinalizedTicks;
                if (!stale && m.FinalizedTicks + _options.Retention.Ticks > now.UtcTicks) break;
                _deadLetters.Dequeue();
                if (stale) continue;
                Forget(m);
                purged.Add(m);
                durable = _journal.Append(JournalRecords.Remove(m.Id), null);
            }
        }
        await durable;
        foreach (var m in purged) DeleteFile(m);
        return purged.Count;
    }

    private void Forget(SpooledMessage m)
    {
        // Under _gate.
        _index.Remove(m.Key);
        m.Removed = true;
        foreach (var s in m.Slots)
        {
            if (s.Status == RecipientStatus.Pending) PendingBox(s.Route.Queue).Value--;
        }
    }

    private void DeleteFile(SpooledMessage m)
    {
        if (m.BodySegment != 0) return;   // inline in the journal: its record goes with the next compaction
        try { File.Delete(PathOf(m.Id)); }
        catch (IOException e) { _log.DeleteFailed(m.Id, e.Message); }   // the next start deletes it as an orphan
    }

    private void MoveToQuarantine(string path, string id, string reason)
    {
        try
        {
            if (File.Exists(path)) File.Move(path, Path.Combine(_quarantineDir, id), overwrite: true);
            File.WriteAllText(Path.Combine(_quarantineDir, id + ".reason"), reason + Environment.NewLine);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(Path.Combine(_quarantineDir, id + ".reason"), SpoolFiles.FileMode600);
        }
        catch (IOException e) { _log.QuarantineFailed(path, e.Message); }
    }

    private StrongBoxLong PendingBox(string queue)
    {
        if (!_pendingByQueue.TryGetValue(queue, out var box)) _pendingByQueue[queue] = box = new StrongBoxLong();
        return box;
    }

    private Route InternRoute(string schedule, string queue)
    {
        lock (_routes)
        {
            if (!_routes.TryGetValue((schedule, queue), out var route)) _routes[(schedule, queue)] = route = new Route(schedule, queue);
            return route;
        }
    }

    private string InternDomain(string domain)
    {
        lock (_domains)
        {
            if (_domains.TryGetValue(domain, out var interned)) return interned;
            if (_domains.Count < 100_000) _domains[domain] = domain;   // bounded: rare domains are not pooled
            return domain;
        }
    }

    /// <summary>For tests and benchmarks: write a snapshot now.</summary>
    internal void RequestCompaction() => _journal.RequestCompaction();

    public ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            if (_disposed) return ValueTask.CompletedTask;
            _disposed = true;
        }
        _journal.Dispose();
        return ValueTask.CompletedTask;
    }
}
