// SmtpLineReader: finds one command line in a bounded window of the input, with no I/O.
// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF (AUTH lines: 12288, RFC 4954 §4).
using System.Buffers;
using System.Text;

namespace Relay.Inbound.Protocol;

internal enum LineStatus
{
    /// <summary>A CRLF-terminated line was found; the line excludes the CRLF.</summary>
    Line,
    /// <summary>No line end yet inside the window: read more.</summary>
    Incomplete,
    /// <summary>No line end inside the window: the caller discards up to the next LF and replies 500 5.5.2.</summary>
    TooLong,
    /// <summary>A line ended with a bare LF; it is consumed but never interpreted.</summary>
    BareLineFeed,
}

internal static class SmtpLineReader
{
    public const int MaxCommandLine = 512;
    public const int MaxAuthLine = 12288;

    /// <summary>
    /// Looks for the next line in <paramref name="buffer"/>. On <see cref="LineStatus.Line"/> and
    /// <see cref="LineStatus.BareLineFeed"/>, <paramref name="buffer"/> is advanced past the LF.
    /// </summary>
    public static LineStatus TryReadLine(ref ReadOnlySequence<byte> buffer, int maxLength, out ReadOnlySequence<byte> line)
    {
        var window = buffer.Length > maxLength ? buffer.Slice(0, maxLength) : buffer;
        var lf = window.PositionOf((byte)'\n');
        if (lf is null)
        {
            line = default;
            return buffer.Length >= maxLength ? LineStatus.TooLong : LineStatus.Incomplete;
        }

        var withoutLf = buffer.Slice(0, lf.Value);
        buffer = buffer.Slice(buffer.GetPosition(1, lf.Value));
        if (withoutLf.Length == 0 || LastByte(withoutLf) != (byte)'\r')
        {
            line = withoutLf;
            return LineStatus.BareLineFeed;
        }

        line = withoutLf.Slice(0, withoutLf.Length - 1);
        return LineStatus.Line;
    }

    /// <summary>Drops input up to and including the next LF. True when the LF was found.</summary>
    public static bool TrySkipLine(ref ReadOnlySequence<byte> buffer)
    {
        var lf = buffer.PositionOf((byte)'\n');
        if (lf is null)
        {
            buffer = buffer.Slice(buffer.End);
            return false;
        }

        buffer = buffer.Slice(buffer.GetPosition(1, lf.Value));
        return true;
    }

    /// <summary>AUTH lines (and SASL responses) may be longer than ordinary commands.</summary>
    public static bool StartsWithAuth(in ReadOnlySequence<byte> buffer)
    {
        if (buffer.Length < 5)
        {
            return false;
        }

        Span<byte> head = stackalloc byte[5];
        buffer.Slice(0, 5).CopyTo(head);
        return Ascii.EqualsIgnoreCase(head, "AUTH "u8);
    }

    private static byte LastByte(in ReadOnlySequence<byte> sequence) =>
        sequence.IsSingleSegment ? sequence.FirstSpan[^1] : sequence.Slice(sequence.Length - 1).FirstSpan[0];
}
