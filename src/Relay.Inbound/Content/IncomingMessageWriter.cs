// IncomingMessageWriter: streams one received message into the spool with bounded memory.
// Only the header section is buffered (up to MaxHeaderBytes) so it can be parsed with MimeKit and
// our trace headers put in front of it; every received byte after that goes straight through.
using MimeKit;
using Relay.Spool;

namespace Relay.Inbound.Content;

/// <summary>Why a message will be refused when its data ends; the first problem found wins.</summary>
internal enum MessageRejection { None, TooBig, HeaderTooBig, MailLoop, BareLineEnding, Nul, LineTooLong, SpoolFailed }

internal sealed class IncomingMessageWriter
{
    public const int MaxHeaderBytes = 256 * 1024;

    private readonly IIncomingMessage _message;
    private readonly long _maxSize;
    private readonly int _maxReceived;
    private readonly Func<HeaderList, byte[]> _prefix;
    private ContentInspector _inspector;
    private byte[]? _header = new byte[4096];
    private int _headerLength;
    private int _scanPos;
    private bool _firstLineScanned;

    /// <param name="message">Where the bytes go.</param>
    /// <param name="maxSize">Limit on received bytes (our added headers do not count).</param>
    /// <param name="maxReceived">More <c>Received:</c> headers than this is a loop.</param>
    /// <param name="prefix">Builds the trace headers once the header section is known.</param>
    public IncomingMessageWriter(IIncomingMessage message, long maxSize, int maxReceived, Func<HeaderList, byte[]> prefix)
    {
        _message = message;
        _maxSize = maxSize;
        _maxReceived = maxReceived;
        _prefix = prefix;
    }

    public MessageRejection Rejection { get; private set; }

    public Exception? SpoolError { get; private set; }

    /// <summary>Bytes received from the client so far (after dot-unstuffing).</summary>
    public long ReceivedBytes { get; private set; }

    /// <summary>The parsed header section, once it is complete.</summary>
    public HeaderList? Headers { get; private set; }

    public async ValueTask AppendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        ReceivedBytes += data.Length;
        if (Rejection != MessageRejection.None)
        {
            return; // keep reading to the end of the data, store nothing more
        }

        if (ReceivedBytes > _maxSize)
        {
            Reject(MessageRejection.TooBig);
            return;
        }

        _inspector.Inspect(data.Span);
        if (CheckContent())
        {
            return;
        }

        if (_header is null)
        {
            await WriteAsync(data, cancellationToken);
            return;
        }

        if (_headerLength + data.Length > MaxHeaderBytes + 1024)
        {
            // Copy only what can still be part of the header section; the rest waits below.
            var room = MaxHeaderBytes + 1024 - _headerLength;
            Buffer(data.Span[..room]);
            if (!TryFindHeaderEnd(out var end))
            {
                Reject(MessageRejection.HeaderTooBig);
                return;
            }

            await FlushHeaderAsync(end, cancellationToken);
            await WriteAsync(data[room..], cancellationToken);
            return;
        }

        Buffer(data.Span);
        if (TryFindHeaderEnd(out var headerEnd))
        {
            await FlushHeaderAsync(headerEnd, cancellationToken);
        }
        else if (_headerLength > MaxHeaderBytes)
        {
            Reject(MessageRejection.HeaderTooBig);
        }
    }

    /// <summary>The data ended: a message with no body is all header section.</summary>
    public async ValueTask CompleteAsync(CancellationToken cancellationToken)
    {
        _inspector.Complete();
        if (Rejection != MessageRejection.None || CheckContent())
        {
            return;
        }

        if (_header is not null)
        {
            await FlushHeaderAsync(TryFindHeaderEnd(out var end) ? end : _headerLength, cancellationToken);
        }
    }

    private bool CheckContent()
    {
        var rejection = _inspector.Problem switch
        {
            ContentProblem.BareLineEnding => MessageRejection.BareLineEnding,
            ContentProblem.Nul => MessageRejection.Nul,
            ContentProblem.LineTooLong => MessageRejection.LineTooLong,
            _ => MessageRejection.None,
        };
        if (rejection == MessageRejection.None)
        {
            return false;
        }

        Reject(rejection);
        return true;
    }

    private void Reject(MessageRejection rejection)
    {
        Rejection = rejection;
        _header = null;
    }

    private void Buffer(ReadOnlySpan<byte> data)
    {
        if (_headerLength + data.Length > _header!.Length)
        {
            Array.Resize(ref _header, Math.Max(_header.Length * 2, _headerLength + data.Length));
        }

        data.CopyTo(_header.AsSpan(_headerLength));
        _headerLength += data.Length;
    }

    /// <summary>
    /// The header section ends before the first empty line, or before the first line that is
    /// neither a field ("name:") nor a continuation (RFC 5322 §2.2, as MimeKit reads it).
    /// </summary>
    private bool TryFindHeaderEnd(out int end)
    {
        var buffer = _header.AsSpan(0, _headerLength);
        while (true)
        {
            var lf = buffer[_scanPos..].IndexOf((byte)'\n');
            if (lf < 0)
            {
                end = 0;
                return false;
            }

            var line = buffer.Slice(_scanPos, lf);
            if (line.Length > 0 && line[^1] == (byte)'\r')
            {
                line = line[..^1];
            }

            var continuation = line.Length > 0 && (line[0] == (byte)' ' || line[0] == (byte)'\t');
            if (line.Length == 0 || (continuation ? !_firstLineScanned : !IsFieldLine(line)))
            {
                end = _scanPos;
                return true;
            }

            _firstLineScanned = true;
            _scanPos += lf + 1;
        }
    }

    private static bool IsFieldLine(ReadOnlySpan<byte> line)
    {
        var colon = line.IndexOf((byte)':');
        if (colon <= 0)
        {
            return false;
        }

        foreach (var b in line[..colon].TrimEnd((byte)' '))
        {
            if (b is < 33 or > 126)
            {
                return false;
            }
        }

        return true;
    }

    private async ValueTask FlushHeaderAsync(int headerEnd, CancellationToken cancellationToken)
    {
        var buffered = _header!;
        var length = _headerLength;
        _header = null;

        Headers = ParseHeaders(buffered, headerEnd);
        if (Headers.Count(h => h.Id == HeaderId.Received) > _maxReceived)
        {
            Reject(MessageRejection.MailLoop);
            return;
        }

        await WriteAsync(_prefix(Headers), cancellationToken);
        await WriteAsync(buffered.AsMemory(0, length), cancellationToken);
    }

    private static HeaderList ParseHeaders(byte[] buffer, int length)
    {
        try
        {
            using var stream = new MemoryStream(buffer, 0, length, writable: false);
            return HeaderList.Load(ParserOptions.Default, stream);
        }
        catch (Exception)
        {
            // Not parseable as headers: nothing in it can set a priority or count as a hop.
            return new HeaderList();
        }
    }

    private async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (data.IsEmpty || Rejection != MessageRejection.None)
        {
            return;
        }

        try
        {
            await _message.WriteAsync(data, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            SpoolError = e;
            Reject(MessageRejection.SpoolFailed);
        }
    }
}
