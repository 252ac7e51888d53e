// SpoolJournal: the append-only state journal with group commit. Callers append records (under the spool's
// lock, so journal order = index order); one writer thread writes everything appended meanwhile with ONE
// fsync and then completes all their tasks. When the journal grows, it is compacted into a snapshot segment.
using System.Buffers;
using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using System.IO.Hashing;

namespace Relay.Spool;

internal sealed class SpoolJournal : IDisposable
{
    private const uint SegmentMagic = 0x4A594C52;   // "RLYJ"
    private const int HeaderLength = 16;
    private const int FrameHeader = 8;               // i32 payload length, u32 CRC-32 of payload
    private const int MaxRecord = 64 * 1024 * 1024;
    private const byte KindLog = 0, KindSnapshot = 1;

    private readonly string _dir;
    private readonly string _quarantine;
    private readonly object _gate;                   // the spool's index lock (taken for snapshots)
    private readonly ILogger _log;
    private readonly FileSpoolOptions _options;
    private readonly object _batchLock = new();
    private readonly AutoResetEvent _signal = new(false);
    private Batch _current = new();
    private FileStream? _active;
    private uint _activeSalt;
    private long _activeNo;
    private long _bytesSinceSnapshot;   // writer thread only (set by replay before it starts)
    private bool _newSegmentUnsynced;   // the active segment's directory entry is not yet fsynced (writer thread only)
    private long _lastSnapshotBytes;
    private bool _compactRequested;
    private volatile bool _stopping;
    private bool _closed;   // under _batchLock: the writer took its last batch
    private Thread? _writer;
    private Task _compaction = Task.CompletedTask;   // the snapshot being finished beside the writer (one at a time)
    private Func<Action<byte[]>, List<SpooledMessage>>? _snapshotSource;
    private Action<SpooledMessage>? _damagedBody;   // compaction met a body whose checksum fails: the spool quarantines it

    public SpoolJournal(string dir, string quarantine, object gate, FileSpoolOptions options, ILogger log)
    {
        _dir = dir;
        _quarantine = quarantine;
        _gate = gate;
        _options = options;
        _log = log;
    }

    /// <summary>True when replay met a damaged record (so lost commits may exist).</summary>
    public bool HadCorruption { get; private set; }

    /// <summary>Replay: records with a bad checksum that look like a message's Body (id, segment, frame offset).</summary>
    public List<(string Id, int Segment, long Offset)> DamagedBodies { get; } = [];

    /// <summary>True when there was no journal at all.</summary>
    public bool WasEmpty { get; private set; }

    /// <summary>Number of fsyncs of the journal so far (group-commit efficiency is records / syncs).</summary>
    public long SyncCount;

    private sealed class Batch
    {
        public readonly ArrayBufferWriter<byte> Buffer = new(64 * 1024);
        public readonly HashSet<string> Dirs = [];
        public readonly List<FileStream> Files = [];
        public readonly List<(SpooledMessage Message, int Offset)> Bodies = [];   // inline bodies: frame offset in Buffer
        public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Count;
    }

    private string SegmentPath(long no) => Path.Combine(_dir, $"{no:D12}.log");

    // ---------------------------------------------------------------- recovery

    /// <summary>
    /// Replays the newest snapshot and every later segment, yielding record payloads in order with where their
    /// frame starts (segment number, offset): a Body record is read again from there when its message is sent.
    /// </summary>
    public IEnumerable<(byte[] Payload, int Segment, long Offset)> Replay()
    {
        foreach (var tmp in Directory.EnumerateFiles(_dir, "*.tmp")) File.Delete(tmp);   // unfinished snapshots
        var segments = Directory.EnumerateFiles(_dir, "*.log")
            .Select(p => (Path: p, No: long.TryParse(Path.GetFileNameWithoutExtension(p), out var n) ? n : -1))
            .Where(s => s.No >= 0).OrderBy(s => s.No).ToList();
        WasEmpty = segments.Count == 0;
        var start = 0;
        for (var i = segments.Count - 1; i >= 0; i--)
        {
            if (ReadKind(segments[i].Path) == KindSnapshot) { start = i; break; }
        }
        for (var i = 0; i < start; i++) TryDelete(segments[i].Path);   // superseded by the snapshot
        _activeNo = segments.Count == 0 ? 0 : segments[^1].No;
        long bytes = 0;
        for (var i = start; i < segments.Count; i++)
        {
            bytes += new FileInfo(segments[i].Path).Length;
            foreach (var (payload, offset) in ReadSegment(segments[i].Path, (int)segments[i].No, isLast: i == segments.Count - 1))
                yield return (payload, (int)segments[i].No, offset);
        }
        _bytesSinceSnapshot = bytes;
        // Many segments (one per restart) or a big log: compact soon, off the start-up path.
        _compactRequested = segments.Count - start > 4 || bytes > _options.CompactionBytes;
    }

    private static byte ReadKind(string path)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1);
            Span<byte> h = stackalloc byte[HeaderLength];
            if (fs.Read(h) < HeaderLength || BinaryPrimitives.ReadUInt32LittleEndian(h) != SegmentMagic) return 255;
            return h[8];
        }
        catch (IOException) { return 255; }
    }

    private IEnumerable<(byte[] Payload, long Offset)> ReadSegment(string path, int segmentNo, bool isLast)
    {
        FileStream fs;
        try { fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20); }
        catch (IOException e) { _log.SegmentUnreadable(path, e.Message); HadCorruption = true; yield break; }
        using (fs)
        {
            var length = fs.Length;
            var header = new byte[HeaderLength];
            if (fs.Read(header) < HeaderLength || BinaryPrimitives.ReadUInt32LittleEndian(header) != SegmentMagic)
            {
                if (length > 0) { QuarantineCopy(path); _log.SegmentUnreadable(path, "bad header"); HadCorruption = true; }
                yield break;
            }
            var salt = SaltOf(header);
            var frame = new byte[FrameHeader];
            var scratch = new byte[64 * 1024];   // record bytes are checked here; only what replay needs is copied out
            var sawEnd = header[8] != KindSnapshot;
            while (true)
            {
                var pos = fs.Position;
                if (pos == length) break;
                var ok = ReadExactly(fs, frame);
                var len = ok ? BinaryPrimitives.ReadInt32LittleEndian(frame) : -1;
                var crc = ok ? BinaryPrimitives.ReadUInt32LittleEndian(frame.AsSpan(4)) ^ salt : 0;
                byte[]? payload = null;
                if (len > 0 && len <= MaxRecord && pos + FrameHeader + len <= length)
                {
                    if (scratch.Length < len) scratch = new byte[Math.Max(len, 2 * scratch.Length)];
                    var record = scratch.AsMemory(0, len);
                    if (ReadExactly(fs, record) && Crc32.HashToUInt32(record.Span) == crc && KnownType(scratch[0]))
                    {
                        // A Body record's bytes are read again when its message is sent: replay needs its id only.
                        payload = scratch[0] == (byte)RecordType.Body ? scratch[..Math.Min(len, JournalRecords.BodyImageStart)] : record.ToArray();
                    }
                }
                if (payload is null)
                {
                    // A damaged record that still starts like a Body: note its place. A message left with no body
                    // at all is pointed there after replay, so a read quarantines it with the bytes it still has.
                    // (Its length field is not trusted: the scan below looks for the next whole frame from pos + 1.)
                    if (len > JournalRecords.BodyImageStart && len <= MaxRecord && pos + FrameHeader + len <= length
                        && LooksLikeBody(scratch.AsSpan(0, Math.Min(len, scratch.Length))))
                        DamagedBodies.Add((System.Text.Encoding.ASCII.GetString(scratch, 2, MessageId.Length), segmentNo, pos));
                    var next = Resync(fs, pos + 1, length, salt);
                    if (next < 0)
                    {
                        // Nothing valid follows: a torn tail from a crash mid-write (normal for the last segment).
                        if (isLast) _log.TornTail(path, pos, length - pos);
                        else { _log.CorruptRecord(path, pos, length - pos); HadCorruption = true; QuarantineCopy(path); }
                        break;
                    }
                    _log.CorruptRecord(path, pos, next - pos);
                    HadCorruption = true;
                    QuarantineCopy(path);
                    fs.Position = next;
                    continue;
                }
                if (payload[0] == (byte)RecordType.SnapshotEnd) { sawEnd = true; continue; }
                yield return (payload, pos);
            }
            if (!sawEnd) { _log.SegmentUnreadable(path, "snapshot without end record"); HadCorruption = true; }
        }
    }

    private static bool KnownType(byte t) => t is >= 1 and <= 8;

    /// <summary>Whether a record's bytes start like a Body record: type 8, then a queue id.</summary>
    private static bool LooksLikeBody(ReadOnlySpan<byte> record) =>
        record.Length > JournalRecords.BodyImageStart && record[0] == (byte)RecordType.Body && record[1] == MessageId.Length
        && MessageId.TryParse(System.Text.Encoding.ASCII.GetString(record.Slice(2, MessageId.Length)), out _);

    /// <summary>Whether a frame as stored (see <see cref="ReadStoredFrame"/>) is a whole Body record whose CRC holds.</summary>
    private static bool IsWholeBody(byte[] stored, uint salt) =>
        stored.Length > FrameHeader + JournalRecords.BodyImageStart
        && BinaryPrimitives.ReadInt32LittleEndian(stored) == stored.Length - FrameHeader
        && stored[FrameHeader] == (byte)RecordType.Body
        && (Crc32.HashToUInt32(stored.AsSpan(FrameHeader)) ^ salt) == BinaryPrimitives.ReadUInt32LittleEndian(stored.AsSpan(4));

    /// <summary>The frame (header and payload) at <paramref name="offset"/> as stored, unchecked but for its bounds.</summary>
    private static byte[] ReadStoredFrame(Microsoft.Win32.SafeHandles.SafeFileHandle handle, long offset, string path)
    {
        Span<byte> header = stackalloc byte[FrameHeader];
        if (RandomAccess.Read(handle, header, offset) < FrameHeader) throw new IOException($"{path}@{offset}: short read");
        var len = BinaryPrimitives.ReadInt32LittleEndian(header);
        var room = RandomAccess.GetLength(handle) - offset - FrameHeader;
        if (len <= 0 || len > MaxRecord || len > room) return header.ToArray();   // a damaged length: the header alone (never whole)
        var stored = new byte[FrameHeader + len];
        header.CopyTo(stored);
        if (RandomAccess.Read(handle, stored.AsSpan(FrameHeader), offset + FrameHeader) < len) throw new IOException($"{path}@{offset}: short read");
        return stored;
    }

    private Microsoft.Win32.SafeHandles.SafeFileHandle OpenForRead(int segment) =>
        File.OpenHandle(SegmentPath(segment), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);

    /// <summary>Best effort, no checks: the payload bytes of the record at that place (for the quarantine), or null.</summary>
    public byte[]? ReadRawRecord(int segment, long offset)
    {
        try
        {
            using var handle = OpenForRead(segment);
            return ReadStoredFrame(handle, offset, SegmentPath(segment))[FrameHeader..];
        }
        catch (IOException) { return null; }
    }

    /// <summary>
    /// Reads the Body record whose frame starts at <paramref name="offset"/> of segment <paramref name="segment"/>
    /// and checks its CRC. A segment deleted by a compaction in the meantime throws FileNotFoundException.
    /// </summary>
    /// <returns>The record's payload, in place in the frame as read (no second copy).</returns>
    /// <exception cref="SpoolCorruptException">No whole, checksummed Body record there.</exception>
    public ArraySegment<byte> ReadBody(int segment, long offset)
    {
        using var handle = OpenForRead(segment);
        byte[] stored;
        try { stored = ReadStoredFrame(handle, offset, SegmentPath(segment)); }
        catch (IOException e) when (e is not FileNotFoundException) { throw new SpoolCorruptException(e.Message, e); }
        if (!IsWholeBody(stored, SaltOf(handle)))
            throw new SpoolCorruptException($"{SegmentPath(segment)}@{offset}: message record damaged (checksum or length)");
        return new ArraySegment<byte>(stored, FrameHeader, stored.Length - FrameHeader);
    }

    private static bool ReadExactly(Stream s, Memory<byte> buffer)
    {
        try { s.ReadExactly(buffer.Span); return true; }
        catch (EndOfStreamException) { return false; }
    }

    /// <summary>Finds the next offset at which a whole, checksummed record starts, or −1.</summary>
    private static long Resync(FileStream fs, long from, long length, uint salt)
    {
        if (from >= length) return -1;
        var rest = new byte[length - from];
        fs.Position = from;
        fs.ReadExactly(rest);
        for (var i = 0; i + FrameHeader < rest.Length; i++)
        {
            var len = BinaryPrimitives.ReadInt32LittleEndian(rest.AsSpan(i));
            if (len <= 0 || len > MaxRecord || i + FrameHeader + len > rest.Length) continue;
            var payload = rest.AsSpan(i + FrameHeader, len);
            if (!KnownType(payload[0])) continue;
            if ((Crc32.HashToUInt32(payload) ^ salt) == BinaryPrimitives.ReadUInt32LittleEndian(rest.AsSpan(i + 4))) return from + i;
        }
        return -1;
    }

    private void QuarantineCopy(string path)
    {
        try
        {
            var target = Path.Combine(_quarantine, "journal-" + Path.GetFileName(path));
            if (!File.Exists(target)) File.Copy(path, target);
        }
        catch (IOException e) { _log.QuarantineFailed(path, e.Message); }
    }

    // ---------------------------------------------------------------- writing

    /// <summary>Opens a fresh segment and starts the writer. Never appends behind an old (maybe torn) tail.</summary>
    public void Start(Func<Action<byte[]>, List<SpooledMessage>> snapshotSource, Action<SpooledMessage> damagedBody)
    {
        _snapshotSource = snapshotSource;
        _damagedBody = damagedBody;
        _activeNo++;
        _active = OpenSegment(SegmentPath(_activeNo), KindLog, out _activeSalt);
        SpoolFiles.SyncDirectory(_dir);
        _writer = new Thread(WriterLoop) { IsBackground = true, Name = "spool-journal" };
        _writer.Start();
        if (_compactRequested) _signal.Set();
    }

    /// <summary>
    /// A new segment, header: magic, version 2, kind, and a random salt. Every frame's CRC there is XORed with the
    /// salt, so bytes inside a message (which a sender chooses) can never pass for a record of this segment when
    /// replay scans past a damaged frame. Version 1 segments (no salt) still replay.
    /// </summary>
    private static FileStream OpenSegment(string path, byte kind, out uint salt)
    {
        salt = 0;
        while (salt == 0) salt = BinaryPrimitives.ReadUInt32LittleEndian(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));
        var fs = SpoolFiles.CreateNew(path, bufferSize: 0);   // unbuffered: a batch is one write, a failed one leaves nothing queued
        var header = new byte[HeaderLength];
        BinaryPrimitives.WriteUInt32LittleEndian(header, SegmentMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(4), 2);
        header[8] = kind;
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), salt);
        fs.Write(header);
        return fs;
    }

    private static uint SaltOf(ReadOnlySpan<byte> header) =>
        BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) >= 2 ? BinaryPrimitives.ReadUInt32LittleEndian(header[12..]) : 0;

    private static uint SaltOf(Microsoft.Win32.SafeHandles.SafeFileHandle handle)
    {
        Span<byte> header = stackalloc byte[HeaderLength];
        return RandomAccess.Read(handle, header, 0) == HeaderLength ? SaltOf(header) : 0;
    }

    /// <summary>
    /// Queues one record; the task completes when it (and the directory <paramref name="syncDir"/>, if any)
    /// is durable. Call while holding the spool's lock so that journal order matches the index.
    /// </summary>
    public Task Append(byte[] payload, string? syncDir, FileStream? syncFile = null)
    {
        if (_stopping) return Task.FromException(new SpoolWriteException("spool is shutting down"));
        lock (_batchLock)
        {
            if (_closed) return Task.FromException(new SpoolWriteException("spool is shutting down"));
            var b = _current;
            WriteFrame(b.Buffer, payload);
            if (syncDir is not null) b.Dirs.Add(syncDir);
            if (syncFile is not null) b.Files.Add(syncFile);
            b.Count++;
            _signal.Set();
            return b.Done.Task;
        }
    }

    /// <summary>
    /// Queues the Body record of a small message and its first Message record in the same batch (so neither is
    /// ever durable without the other); the writer sets the message's body location once they are durable.
    /// </summary>
    public Task AppendInline(byte[] body, SpooledMessage message, byte[] record)
    {
        if (_stopping) return Task.FromException(new SpoolWriteException("spool is shutting down"));
        lock (_batchLock)
        {
            if (_closed) return Task.FromException(new SpoolWriteException("spool is shutting down"));
            var b = _current;
            b.Bodies.Add((message, b.Buffer.WrittenCount));
            WriteFrame(b.Buffer, body);
            WriteFrame(b.Buffer, record);
            b.Count++;
            _signal.Set();
            return b.Done.Task;
        }
    }

    /// <summary>Frames a record; its CRC is XORed with <paramref name="salt"/> (0: a batch, salted when written).</summary>
    private static void WriteFrame(IBufferWriter<byte> buffer, byte[] payload, uint salt = 0)
    {
        var span = buffer.GetSpan(FrameHeader + payload.Length);
        BinaryPrimitives.WriteInt32LittleEndian(span, payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[4..], Crc32.HashToUInt32(payload) ^ salt);
        payload.CopyTo(span[FrameHeader..]);
        buffer.Advance(FrameHeader + payload.Length);
    }

    /// <summary>XORs the CRC of every frame in a batch with the salt of the segment it is about to be written to.</summary>
    private static void SaltFrames(ArrayBufferWriter<byte> buffer, uint salt)
    {
        if (salt == 0) return;
        if (!System.Runtime.InteropServices.MemoryMarshal.TryGetArray(buffer.WrittenMemory, out var written))
            throw new InvalidOperationException("batch buffer is not array-backed");   // refuse the batch rather than write unsalted frames
        var span = written.AsSpan();
        for (var at = 0; at + FrameHeader <= span.Length;)
        {
            var crc = span.Slice(at + 4, 4);
            BinaryPrimitives.WriteUInt32LittleEndian(crc, BinaryPrimitives.ReadUInt32LittleEndian(crc) ^ salt);
            at += FrameHeader + BinaryPrimitives.ReadInt32LittleEndian(span[at..]);
        }
    }

    private void WriterLoop()
    {
        while (true)
        {
            _signal.WaitOne();
            Batch batch;
            lock (_batchLock)
            {
                batch = _current;
                if (batch.Count > 0) _current = new Batch();
            }
            if (batch.Count > 0) WriteBatch(batch);
            if (_stopping) break;
            if (_compaction.IsCompleted
                && (_compactRequested || _bytesSinceSnapshot > Math.Max(_options.CompactionBytes, 2 * _lastSnapshotBytes)))
            {
                _compactRequested = false;
                try { Compact(); }
                catch (Exception e) { _log.CompactionFailed(e.Message); }
            }
        }
        Batch last;
        lock (_batchLock)
        {
            last = _current;
            _closed = true;   // nothing joins the last batch once it is taken (it would be acknowledged unwritten)
        }
        if (last.Count > 0) WriteBatch(last);
        _active?.Dispose();
    }

    private void WriteBatch(Batch batch)
    {
        long start = -1;
        try
        {
            if (_options.Fault?.Invoke("journal") is { } fault) throw fault;
            // Group commit: the message files of every commit in the batch (in parallel, so the file system
            // can merge them into few journal commits of its own), their directories, then one journal fsync.
            if (batch.Files.Count == 1) batch.Files[0].Flush(flushToDisk: true);
            else if (batch.Files.Count > 1)
                Parallel.ForEach(batch.Files, new ParallelOptions { MaxDegreeOfParallelism = 16 }, f => f.Flush(flushToDisk: true));
            foreach (var dir in batch.Dirs) SpoolFiles.SyncDirectory(dir);
            start = _active!.Position;
            SaltFrames(batch.Buffer, _activeSalt);
            _active.Write(batch.Buffer.WrittenSpan);
            _active.Flush(flushToDisk: true);
            if (_newSegmentUnsynced)
            {
                // A segment opened after start (compaction, a failed write) holds acknowledged records only once
                // its name in the directory is durable too.
                SpoolFiles.SyncDirectory(_dir);
                _newSegmentUnsynced = false;
            }
            Interlocked.Increment(ref SyncCount);
            foreach (var (m, offset) in batch.Bodies)
            {
                // Offset first, then the segment with release semantics: a reader that sees the segment (acquire)
                // sees the offset too. No spool lock here: group commit never waits behind a long index walk.
                m.BodyOffset = start + offset;
                Volatile.Write(ref m.BodySegment, (int)_activeNo);
            }
            _bytesSinceSnapshot += batch.Buffer.WrittenCount;
            batch.Done.TrySetResult();
        }
        catch (Exception e)
        {
            _log.JournalWriteFailed(e.Message);
            // The segment may now end in a torn record: cut it off (else a Body record of this refused batch could
            // look like lost mail to a later rescue), then continue in a fresh segment (replay skips any tear left).
            try
            {
                if (start >= 0 && _active is not null)
                {
                    RandomAccess.SetLength(_active.SafeFileHandle, start);
                    RandomAccess.FlushToDisk(_active.SafeFileHandle);
                }
            }
            catch (Exception) { }   // the disk is failing anyway; replay skips a tear, and rescue needs damage elsewhere
            // Refused only now: cut first, so a crash in between does not leave a refused commit to be replayed.
            batch.Done.TrySetException(new SpoolWriteException("spool journal write failed: " + e.Message, e));
            try { _active?.Dispose(); } catch (Exception) { }
            try
            {
                _activeNo++;   // a number of its own even if this open fails too (a leftover file must not block every retry)
                _active = OpenSegment(SegmentPath(_activeNo), KindLog, out _activeSalt);
                _newSegmentUnsynced = true;
            }
            catch (Exception e2) { _log.JournalWriteFailed("cannot open a new segment: " + e2.Message); }
        }
    }

    /// <summary>
    /// Writes the live state as snapshot segment N+1 while new appends go to N+2, then deletes segments ≤ N.
    /// A crash at any point leaves either the old segments or the complete snapshot (it is renamed into place
    /// only after fsync), so replay is always consistent. Only the snapshot point holds up commits (the spool's
    /// lock, one small write per live message); copying the bodies of live inline messages into the snapshot
    /// (after their Message records; replay links them by id) and its fsync run beside the writer, which
    /// meanwhile commits into N+2.
    /// </summary>
    private void Compact()
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        long snapNo;
        FileStream snap;
        uint snapSalt;
        long count = 0;
        var frame = new ArrayBufferWriter<byte>(1 << 16);
        List<SpooledMessage> bodies;
        lock (_gate)
        {
            Batch pending;
            lock (_batchLock)
            {
                pending = _current;
                _current = new Batch();
            }
            // Records appended before the snapshot point go to segment N first, so that every inline body the
            // snapshot must copy has a place on disk.
            if (pending.Count > 0) WriteBatch(pending);
            snapNo = _activeNo + 1;
            snap = OpenSegment(SegmentPath(snapNo) + ".tmp", KindSnapshot, out snapSalt);
            try
            {
                // Nothing changes until both segments exist: a failed open leaves the writer on segment N.
                var next = OpenSegment(SegmentPath(snapNo + 1), KindLog, out var nextSalt);
                _active?.Dispose();
                _active = next;
                _activeSalt = nextSalt;
                _activeNo = snapNo + 1;
                _newSegmentUnsynced = true;

                bodies = _snapshotSource!(payload =>
                {
                    WriteFrame(frame, payload, snapSalt);
                    count++;
                    if (frame.WrittenCount > 1 << 20) { snap.Write(frame.WrittenSpan); frame.ResetWrittenCount(); }
                });
            }
            catch
            {
                snap.Dispose();
                TryDelete(SegmentPath(snapNo) + ".tmp");
                throw;
            }
        }
        _bytesSinceSnapshot = 0;
        _compaction = Task.Run(() =>
        {
            try { FinishSnapshot(snap, snapNo, snapSalt, frame, count, bodies, started); }
            catch (Exception e)
            {
                // Nothing is deleted and no body moves; the next try comes once the journal has grown as much
                // again (not at the next batch: a lasting read error must not make every commit compact).
                _log.CompactionFailed(e.Message);
                snap.Dispose();
                TryDelete(SegmentPath(snapNo) + ".tmp");
            }
            finally
            {
                if (_compactRequested && !_stopping) _signal.Set();   // asked for again meanwhile: the writer starts it
            }
        });
    }

    /// <remarks>
    /// The listed messages' body places cannot change meanwhile: the writer only sets those of new messages, and
    /// this is the one compaction running, so they are read here without the lock.
    /// </remarks>
    private void FinishSnapshot(FileStream snap, long snapNo, uint snapSalt, ArrayBufferWriter<byte> frame, long count,
                                List<SpooledMessage> bodies, long started)
    {
        var moved = new long[bodies.Count];
        var handles = new Dictionary<int, (Microsoft.Win32.SafeHandles.SafeFileHandle Handle, uint Salt)>();
        try
        {
            for (var i = 0; i < bodies.Count; i++)
            {
                var (segment, offset) = (bodies[i].BodySegment, bodies[i].BodyOffset);
                if (!handles.TryGetValue(segment, out var source))
                {
                    var opened = OpenForRead(segment);
                    handles[segment] = source = (opened, SaltOf(opened));
                }
                // Any read error aborts the compaction (nothing deleted). A body whose checksum fails is not
                // copied: the spool quarantines its message now, with the bytes it still has (its old segment
                // is deleted only below), as a delivery attempt would have.
                var stored = ReadStoredFrame(source.Handle, offset, SegmentPath(segment));
                if (!IsWholeBody(stored, source.Salt))
                {
                    moved[i] = -1;
                    _damagedBody?.Invoke(bodies[i]);
                    continue;
                }
                moved[i] = snap.Position + frame.WrittenCount;
                // Re-salted for the snapshot: its checksum now holds under the snapshot segment's salt.
                BinaryPrimitives.WriteUInt32LittleEndian(stored.AsSpan(4), BinaryPrimitives.ReadUInt32LittleEndian(stored.AsSpan(4)) ^ source.Salt ^ snapSalt);
                frame.Write(stored);
                count++;
                if (frame.WrittenCount > 1 << 20) { snap.Write(frame.WrittenSpan); frame.ResetWrittenCount(); }
            }
        }
        finally
        {
            foreach (var h in handles.Values) h.Handle.Dispose();
        }
        WriteFrame(frame, JournalRecords.SnapshotEnd(count), snapSalt);
        snap.Write(frame.WrittenSpan);
        snap.Flush(flushToDisk: true);
        var size = snap.Length;
        snap.Dispose();
        File.Move(SegmentPath(snapNo) + ".tmp", SegmentPath(snapNo));
        SpoolFiles.SyncDirectory(_dir);
        lock (_gate)
        {
            // From now on bodies are read from the snapshot; a reader still holding an old place retries.
            for (var i = 0; i < bodies.Count; i++)
            {
                if (moved[i] < 0) continue;
                bodies[i].BodyOffset = moved[i];
                Volatile.Write(ref bodies[i].BodySegment, (int)snapNo);
            }
        }
        foreach (var p in Directory.EnumerateFiles(_dir, "*.log"))
        {
            if (long.TryParse(Path.GetFileNameWithoutExtension(p), out var n) && n < snapNo) TryDelete(p);
        }
        _lastSnapshotBytes = size;
        _log.Compacted(count, size, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <summary>For tests and benchmarks: compact now (runs on the writer thread).</summary>
    public void RequestCompaction()
    {
        _compactRequested = true;
        _signal.Set();
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { }
    }

    public void Dispose()
    {
        _stopping = true;
        _signal.Set();
        _writer?.Join();
        try { _compaction.Wait(); } catch (AggregateException) { }
        _signal.Dispose();
    }
}
