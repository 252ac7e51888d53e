// IncomingMessage: one message being received into the file spool. Bytes go straight into the message file;
// CommitAsync appends the envelope and footer, fsyncs the file, then waits for the journal's group commit.
using Microsoft.Extensions.Logging;

namespace Relay.Spool;

internal sealed class IncomingMessage(FileSpool spool, string id, string path, FileStream file) : IIncomingMessage
{
    private uint _crc;
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
            await file.WriteAsync(bytes, cancellationToken);
            _crc = Crc32.Append(_crc, bytes.Span);
            Length += bytes.Length;
        }
        catch (Exception e) when (e is IOException and not SpoolWriteException || e is UnauthorizedAccessException)
        {
            _failed = true;
            throw new SpoolWriteException("cannot write the message to the spool: " + e.Message, e);
        }
    }

    public async Task CommitAsync(MessageEnvelope envelope, CancellationToken cancellationToken = default)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(envelope);
        if (envelope.Recipients.Count == 0) throw new ArgumentException("a message needs at least one recipient", nameof(envelope));
        var stored = envelope with { Id = id, Size = Length };
        try
        {
            if (spool.Fault("data") is { } fault) throw fault;
            var json = MessageFile.SerializeEnvelope(stored);
            await file.WriteAsync(json, cancellationToken);
            await file.WriteAsync(MessageFile.Footer(Length, json.Length, Crc32.Compute(json), _crc), cancellationToken);
            await file.FlushAsync(cancellationToken);   // to the OS; the journal writer fsyncs it with its batch
        }
        catch (Exception e) when (e is IOException and not SpoolWriteException || e is UnauthorizedAccessException)
        {
            _failed = true;
            throw new SpoolWriteException("cannot write the message to the spool: " + e.Message, e);
        }
        try
        {
            await spool.CommitAsync(this, stored, file);   // returns when file, directory and journal record are fsynced
            _committed = true;
            await file.DisposeAsync();
        }
        catch (SpoolWriteException)
        {
            _failed = true;
            throw;
        }
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
        await file.DisposeAsync();
        if (_committed) return;
        try { File.Delete(path); }
        catch (IOException) { }   // left behind: deleted as an orphan at the next start
    }
}
