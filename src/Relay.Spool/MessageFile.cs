// MessageFile: the on-disk form of one message: its bytes, then its envelope, then a fixed footer that
// proves the file is complete. Self-describing, so a message can be read (or rescued) without the journal.
//
//   [body bytes][envelope JSON, UTF-8][footer: "RLYM" | u32 version | i64 body length | i32 envelope length
//                                              | u32 envelope CRC-32 | u32 body CRC-32]
using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.IO.Hashing;

namespace Relay.Spool;

internal static class MessageFile
{
    public const int FooterLength = 28;
    private const uint Magic = 0x4D594C52;   // "RLYM" little-endian
    private const uint Version = 1;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static byte[] SerializeEnvelope(MessageEnvelope envelope) => JsonSerializer.SerializeToUtf8Bytes(envelope, Json);

    public static byte[] Footer(long bodyLength, int envelopeLength, uint envelopeCrc, uint bodyCrc)
    {
        var footer = new byte[FooterLength];
        var s = footer.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], Version);
        BinaryPrimitives.WriteInt64LittleEndian(s[8..], bodyLength);
        BinaryPrimitives.WriteInt32LittleEndian(s[16..], envelopeLength);
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], envelopeCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], bodyCrc);
        return footer;
    }

    /// <summary>Reads and checks footer and envelope; returns the envelope and the body length.</summary>
    /// <exception cref="SpoolCorruptException">Truncated, wrong magic or checksum, or unparsable envelope.</exception>
    public static (MessageEnvelope Envelope, long BodyLength) ReadEnvelope(FileStream file)
    {
        var length = file.Length;
        if (length < FooterLength) throw new SpoolCorruptException($"{file.Name}: truncated ({length} bytes, no footer)");
        Span<byte> footer = stackalloc byte[FooterLength];
        RandomAccess.Read(file.SafeFileHandle, footer, length - FooterLength);
        var (bodyLength, envLength, envCrc) = CheckFooter(footer, length, file.Name);
        var env = new byte[envLength];
        RandomAccess.Read(file.SafeFileHandle, env, bodyLength);
        return (ParseEnvelope(env, envCrc, file.Name), bodyLength);
    }

    /// <summary>The same checks on an image held in memory (a message kept inline in the journal).</summary>
    public static (MessageEnvelope Envelope, long BodyLength) ReadEnvelope(ReadOnlySpan<byte> image, string name)
    {
        if (image.Length < FooterLength) throw new SpoolCorruptException($"{name}: truncated ({image.Length} bytes, no footer)");
        var (bodyLength, envLength, envCrc) = CheckFooter(image[^FooterLength..], image.Length, name);
        return (ParseEnvelope(image.Slice((int)bodyLength, envLength), envCrc, name), bodyLength);
    }

    private static (long BodyLength, int EnvelopeLength, uint EnvelopeCrc) CheckFooter(ReadOnlySpan<byte> footer, long length, string name)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(footer) != Magic)
            throw new SpoolCorruptException($"{name}: truncated or damaged (no footer)");
        if (BinaryPrimitives.ReadUInt32LittleEndian(footer[4..]) != Version)
            throw new SpoolCorruptException($"{name}: unknown format version");
        var bodyLength = BinaryPrimitives.ReadInt64LittleEndian(footer[8..]);
        var envLength = BinaryPrimitives.ReadInt32LittleEndian(footer[16..]);
        if (bodyLength < 0 || envLength <= 0 || bodyLength + envLength + FooterLength != length)
            throw new SpoolCorruptException($"{name}: lengths in footer do not match the file size");
        return (bodyLength, envLength, BinaryPrimitives.ReadUInt32LittleEndian(footer[20..]));
    }

    private static MessageEnvelope ParseEnvelope(ReadOnlySpan<byte> env, uint crc, string name)
    {
        if (Crc32.HashToUInt32(env) != crc) throw new SpoolCorruptException($"{name}: envelope checksum mismatch");
        try
        {
            return JsonSerializer.Deserialize<MessageEnvelope>(env, Json) ?? throw new SpoolCorruptException($"{name}: empty envelope");
        }
        catch (JsonException e)
        {
            throw new SpoolCorruptException($"{name}: envelope unreadable: {e.Message}", e);
        }
    }
}

/// <summary>A read-only window on the body part of a message file.</summary>
internal sealed class BodyStream(FileStream file, long length) : Stream
{
    private long _position;

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
    public override long Length => length;

    public override long Position
    {
        get => _position;
        set => _position = Math.Clamp(value, 0, length);
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var n = (int)Math.Min(buffer.Length, length - _position);
        if (n <= 0) return 0;
        var read = RandomAccess.Read(file.SafeFileHandle, buffer[..n], _position);
        _position += read;
        return read;
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var n = (int)Math.Min(buffer.Length, length - _position);
        if (n <= 0) return 0;
        var read = await RandomAccess.ReadAsync(file.SafeFileHandle, buffer[..n], _position, cancellationToken);
        _position += read;
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override long Seek(long offset, SeekOrigin origin) => Position = origin switch
    {
        SeekOrigin.Begin => offset,
        SeekOrigin.Current => _position + offset,
        _ => length + offset,
    };

    public override void Flush() { }
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) file.Dispose();
        base.Dispose(disposing);
    }
}
