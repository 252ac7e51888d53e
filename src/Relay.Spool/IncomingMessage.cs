// IncomingMessage: one message being received into the file spool. A small message is gathered in memory and
// committed inline in the journal (one fsync for the whole group commit, no file of its own); one that outgrows
// FileSpoolOptions.InlineLimit spills into its own message file, which CommitAsync completes with envelope and
// footer before the journal's group commit fsyncs it.
using System.Buffers;
using System.IO.Hashing;

namespace Relay.Spool;

internal sealed class IncomingMessage(FileSpool spool, string id, string path, FileStream? file, int inlineLimit) : IIncomingMessage
{
    private FileStream? _file = file;
    private byte[]? _buffer;   // the bytes so far while the message is small enough to go inline (pooled)
    private readonly Crc32 _crc = new();   // of the body, for the footer
    private bool _committed;
    private bool _failed;
    private bool _disposed;

    public string Id => id;
    public string Path => path;
    public long Length { get; private set; }

    public async ValueTask WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken = default)
    {
        ThrowIfUnusable();
        try
        {
            if (spool.Fault("data") is { } fault) throw fault;
            if (_file is null && Length + bytes.Length <= inlineLimit) Buffer(bytes.Span);
            else
            {
                if (_file is null) await SpillAsync(cancellationToken);
                await _file!.WriteAsync(bytes, cancellationToken);
            }
            _crc.Append(bytes.Span);
            Length += bytes.Length;
        }
        catch (Exception e) when (e is IOException and not SpoolWriteException || e is UnauthorizedAccessException)
        {
            _failed = true;
            throw new SpoolWriteException("cannot write the message to the spool: " + e.Message, e);
        }
        catch
        {
            _failed = true;   // e.g. cancelled half-way through a write: the bytes so far are unknown
            throw;
        }
    }

    private void Buffer(ReadOnlySpan<byte> bytes)
    {
        var needed = (int)Length + bytes.Length;
        if (_buffer is null || _buffer.Length < needed)
        {
            var grown = ArrayPool<byte>.Shared.Rent(Math.Min(inlineLimit, Math.Max(needed, Math.Max(16 * 1024, 2 * (_buffer?.Length ?? 0)))));
            if (_buffer is not null)
            {
                _buffer.AsSpan(0, (int)Length).CopyTo(grown);
                ArrayPool<byte>.Shared.Return(_buffer);
            }
            _buffer = grown;
        }
        bytes.CopyTo(_buffer.AsSpan((int)Length));
    }

    /// <summary>Too big to go inline: from here on the message streams into its own file.</summary>
    private async ValueTask SpillAsync(CancellationToken cancellationToken)
    {
        _file = SpoolFiles.CreateNew(path);
        if (_buffer is null) return;
        await _file.WriteAsync(_buffer.AsMemory(0, (int)Length), cancellationToken);
        ReturnBuffer();
    }

    public async Task CommitAsync(MessageEnvelope envelope, CancellationToken cancellationToken = default)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(envelope);
        if (envelope.Recipients.Count == 0) throw new ArgumentException("a message needs at least one recipient", nameof(envelope));
        var stored = envelope with { Id = id, Size = Length };
        byte[]? inline = null;
        try
        {
            if (spool.Fault("data") is { } fault) throw fault;
            var json = MessageFile.SerializeEnvelope(stored);
            var footer = MessageFile.Footer(Length, json.Length, Crc32.HashToUInt32(json), _crc.GetCurrentHashAsUInt32());
            if (_file is null)
            {
                // The Body record: the same image a message file holds (body, envelope, footer), in the journal.
                inline = JournalRecords.Body(id, (int)Length + json.Length + footer.Length);
                var image = inline.AsSpan(JournalRecords.BodyImageStart);
                _buffer.AsSpan(0, (int)Length).CopyTo(image);
                json.CopyTo(image[(int)Length..]);
                footer.CopyTo(image[((int)Length + json.Length)..]);
                ReturnBuffer();
            }
            else
            {
                await _file.WriteAsync(json, cancellationToken);
                await _file.WriteAsync(footer, cancellationToken);
                await _file.FlushAsync(cancellationToken);   // to the OS; the journal writer fsyncs it with its batch
            }
        }
        catch (Exception e) when (e is IOException and not SpoolWriteException || e is UnauthorizedAccessException)
        {
            _failed = true;
            throw new SpoolWriteException("cannot write the message to the spool: " + e.Message, e);
        }
        catch
        {
            _failed = true;
            throw;
        }
        try
        {
            await spool.CommitAsync(this, stored, _file, inline);   // returns when everything it needs is fsynced
            _committed = true;
            if (_file is not null) await _file.DisposeAsync();
        }
        catch
        {
            _failed = true;   // whatever went wrong (shutdown, cancellation), this message can no longer be committed
            throw;
        }
    }

    private void ReturnBuffer()
    {
        if (_buffer is null) return;
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = null;
    }

    private void ThrowIfUnusable()
    {
        if (_committed) throw new InvalidOperationException("message already committed");
        if (_failed) throw new SpoolWriteException("an earlier spool write of this message failed");
        ObjectDisposedException.ThrowIf(_disposed, this);
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        ReturnBuffer();
        if (_file is null) return;
        await _file.DisposeAsync();
        if (_committed) return;
        try { File.Delete(path); }
        catch (IOException) { }   // left behind: deleted as an orphan at the next start
    }
}
