namespace Relay.Spool;

/// <summary>
/// The write side of the spool, as the accepting stages (SMTP session, DSN builder, HTTP API) see it.
/// Nothing is visible to the scheduler until <see cref="IIncomingMessage.CommitAsync"/> returns.
/// </summary>
public interface IMessageSpool
{
    /// <summary>Starts a new message. Its queue id is allocated now so a Received: header can name it.</summary>
    IIncomingMessage Begin();
}

/// <summary>A message being received. Disposing it without a commit discards it.</summary>
public interface IIncomingMessage : IAsyncDisposable
{
    string Id { get; }

    /// <summary>Bytes written so far.</summary>
    long Length { get; }

    /// <summary>Appends message bytes exactly as delivery will send them (headers first, CRLF line ends).</summary>
    /// <exception cref="SpoolWriteException">The spool could not store them (disk full, I/O error).</exception>
    ValueTask WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken = default);

    /// <summary>
    /// Makes envelope and bytes durable (fsynced). Only after this returns may the caller answer 250.
    /// Concurrent commits may share one fsync (group commit).
    /// </summary>
    /// <exception cref="SpoolWriteException">Not stored; the caller answers 452 4.3.1 and nothing is queued.</exception>
    Task CommitAsync(MessageEnvelope envelope, CancellationToken cancellationToken = default);
}

/// <summary>The spool could not store a message; nothing of it was queued.</summary>
public sealed class SpoolWriteException(string message, Exception? inner = null) : IOException(message, inner);
