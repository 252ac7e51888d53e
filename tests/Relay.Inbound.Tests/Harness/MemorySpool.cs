// MemorySpool: an in-memory IMessageSpool for the SMTP tests (the other side of the boundary).
using System.Collections.Concurrent;
using Relay.Spool;

namespace Relay.Inbound.Tests.Harness;

public sealed record StoredMessage(MessageEnvelope Envelope, byte[] Bytes)
{
    public string Text => System.Text.Encoding.UTF8.GetString(Bytes);
}

public sealed class MemorySpool : IMessageSpool
{
    private int _next;

    public ConcurrentQueue<StoredMessage> Committed { get; } = new();

    /// <summary>Messages begun and disposed without a commit.</summary>
    public int Discarded => _discarded;
    private int _discarded;

    public bool FailCommits { get; set; }
    public bool FailWrites { get; set; }

    /// <summary>When set, CommitAsync waits for it: lets a test prove 250 comes only after the commit.</summary>
    public TaskCompletionSource? CommitGate { get; set; }

    public IIncomingMessage Begin() => new Incoming(this, $"T{Interlocked.Increment(ref _next):D6}");

    public StoredMessage Single() => Assert.Single(Committed);

    private sealed class Incoming(MemorySpool spool, string id) : IIncomingMessage
    {
        private readonly MemoryStream _bytes = new();
        private bool _committed;

        public string Id => id;
        public long Length => _bytes.Length;

        public ValueTask WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken = default)
        {
            if (spool.FailWrites)
            {
                throw new SpoolWriteException("disk full (test)");
            }

            _bytes.Write(bytes.Span);
            return ValueTask.CompletedTask;
        }

        public async Task CommitAsync(MessageEnvelope envelope, CancellationToken cancellationToken = default)
        {
            if (spool.CommitGate is { } gate)
            {
                await gate.Task;
            }

            if (spool.FailCommits)
            {
                throw new SpoolWriteException("fsync failed (test)");
            }

            Assert.Equal(id, envelope.Id);
            Assert.Equal(_bytes.Length, envelope.Size);
            _committed = true;
            spool.Committed.Enqueue(new StoredMessage(envelope, _bytes.ToArray()));
        }

        public ValueTask DisposeAsync()
        {
            if (!_committed)
            {
                Interlocked.Increment(ref spool._discarded);
            }

            return ValueTask.CompletedTask;
        }
    }
}
