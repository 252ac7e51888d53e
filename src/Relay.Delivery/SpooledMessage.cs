// SpooledMessage: hands MailKit the spooled bytes exactly as stored. Nothing is parsed or re-encoded: the header
// block travels as the raw value of one MimeKit Header, the body as a MimePart whose writer copies the spool
// stream. MailKit still does SMTP's dot-stuffing (DATA) or byte counting (BDAT), and still sees the body type
// (a part with Content-Transfer-Encoding 8bit/binary) to choose BODY=8BITMIME / BINARYMIME.
using System.Text;
using MimeKit;
using MimeKit.IO;
using Relay.Spool;

namespace Relay.Delivery;

internal sealed class SpooledMessage : IDisposable
{
    private const int MaxHeaderBlock = 1024 * 1024;

    private SpooledMessage(MimeMessage message, long size, Stream content)
    {
        Message = message;
        Size = size;
        _content = content;
    }

    private readonly Stream _content;

    /// <summary>What MailKit sends: writes exactly the spooled bytes.</summary>
    public MimeMessage Message { get; }

    /// <summary>Bytes MailKit will write (for SIZE= and BDAT).</summary>
    public long Size { get; }

    /// <summary>Takes ownership of <paramref name="content"/>.</summary>
    public static async Task<SpooledMessage> OpenAsync(Stream content, BodyType body, CancellationToken cancellationToken)
    {
        if (!content.CanSeek)
        {
            var copy = new MemoryStream();
            await content.CopyToAsync(copy, cancellationToken);
            await content.DisposeAsync();
            copy.Position = 0;
            content = copy;
        }
        var (header, bodyOffset) = await ReadHeaderBlockAsync(content, cancellationToken);
        var part = new SpooledBody(content, bodyOffset, body);
        var message = new MimeMessage([header]) { Body = part };
        // field ":" raw-value, then MimeKit's own blank line (CRLF), then the body bytes.
        var size = header.RawField.Length + 1 + header.RawValue.Length + 2 + (content.Length - bodyOffset);
        return new SpooledMessage(message, size, content);
    }

    /// <summary>
    /// Splits at the first empty line. The whole header block (minus that empty line) becomes one Header: its field
    /// is the first header's name and its raw value everything after that name's colon, so MimeKit writes it back
    /// byte for byte. A message with no empty line (headers only) gets one added: the only change ever made, and
    /// one RFC 5322 allows. A block whose first line is not a header field cannot be relayed verbatim: that throws
    /// <see cref="UnrelayableMessageException"/> (the inbound stage always starts a message with its Received:).
    /// </summary>
    private static async Task<(Header Header, long BodyOffset)> ReadHeaderBlockAsync(Stream content, CancellationToken cancellationToken)
    {
        var start = content.Position;
        var buffer = new byte[Math.Clamp(content.Length - start, 1, MaxHeaderBlock)];
        var filled = 0;
        while (filled < buffer.Length)
        {
            var read = await content.ReadAsync(buffer.AsMemory(filled), cancellationToken);
            if (read == 0) break;
            filled += read;
        }
        var data = buffer.AsSpan(0, filled);
        var (headerLength, bodyStart) = FindEmptyLine(data);
        if (headerLength < 0 && filled < MaxHeaderBlock && filled > 0 && data[^1] == (byte)'\n')
            (headerLength, bodyStart) = (filled, filled);   // headers only
        var header = headerLength > 0 ? MakeHeader(data[..headerLength]) : null;
        return header is null
            ? throw new UnrelayableMessageException("the spooled message does not start with a header block of at most 1 MB")
            : (header, start + bodyStart);
    }

    /// <summary>The header block ends at the first "\n\r\n" or "\n\n"; its length keeps its last line's "\n".</summary>
    private static (int HeaderLength, int BodyStart) FindEmptyLine(ReadOnlySpan<byte> data)
    {
        for (var i = data.IndexOf((byte)'\n'); i >= 0 && i < data.Length - 1; )
        {
            if (data[i + 1] == (byte)'\n') return (i + 1, i + 2);
            if (data[i + 1] == (byte)'\r' && i + 2 < data.Length && data[i + 2] == (byte)'\n') return (i + 1, i + 3);
            var next = data[(i + 1)..].IndexOf((byte)'\n');
            i = next < 0 ? -1 : i + 1 + next;
        }
        return (-1, -1);
    }

    private static Header? MakeHeader(ReadOnlySpan<byte> block)
    {
        var colon = block.IndexOf((byte)':');
        if (colon <= 0) return null;
        var field = block[..colon];
        foreach (var b in field)
            if (b <= 32 || b >= 127) return null;   // RFC 5322 ftext; anything else is not a header we can relay verbatim
        try
        {
            var header = new Header(Encoding.ASCII.GetString(field), string.Empty);
            header.SetRawValue(block[(colon + 1)..].ToArray());
            return header;
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        Message.Dispose();
        _content.Dispose();
    }

    /// <summary>The body bytes, copied from the spool stream each time MailKit writes (SIZE measuring, then DATA).</summary>
    private sealed class SpooledBody : MimePart
    {
        private readonly Stream _content;
        private readonly long _offset;
        private readonly bool _frozen;

        public SpooledBody(Stream content, long offset, BodyType body) : base("application", "octet-stream")
        {
            _content = content;
            _offset = offset;
            ContentTransferEncoding = body switch
            {
                BodyType.EightBitMime => ContentEncoding.EightBit,
                BodyType.BinaryMime => ContentEncoding.Binary,
                _ => ContentEncoding.Default,
            };
            Headers.Clear();   // no Content-* lines of ours in the output: the message's own headers are in the raw block
            _frozen = true;
        }

        protected override void OnHeadersChanged(HeaderListChangedAction action, Header? header)
        {
            if (!_frozen && action != HeaderListChangedAction.Cleared) base.OnHeadersChanged(action, header);
        }

        public override void Prepare(EncodingConstraint constraint, int maxLineLength = 78) { }   // never re-encode

        public override void WriteTo(FormatOptions options, Stream stream, bool contentOnly, CancellationToken cancellationToken = default)
        {
            _content.Position = _offset;
            _content.CopyTo(stream);
        }

        public override async Task WriteToAsync(FormatOptions options, Stream stream, bool contentOnly, CancellationToken cancellationToken = default)
        {
            _content.Position = _offset;
            await _content.CopyToAsync(stream, cancellationToken);
        }
    }
}

/// <summary>Spooled bytes that cannot be sent unchanged; delivery fails permanently (5.6.0) instead of altering them.</summary>
internal sealed class UnrelayableMessageException(string message) : Exception(message);
