// EventFiles: what only the event log needs on top of the spool's durable-file rules (SpoolFiles) and its CRC-32:
// record framing and durable whole-file replacement.
using System.Buffers;
using System.Buffers.Binary;
using Relay.Spool;
using System.IO.Hashing;

namespace Relay.Events;

internal static class EventFiles
{
    /// <summary>Frame header: i32 payload length, u32 CRC-32 of the payload.</summary>
    public const int FrameHeader = 8;
    public const int MaxRecord = 16 * 1024 * 1024;

    public static FileStream CreateNew(string path) => SpoolFiles.CreateNew(path, bufferSize: 0);

    public static FileStream OpenRead(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 16);

    /// <summary>Writes a whole file durably: temp file, fsync, rename over the old one, fsync of the directory.</summary>
    public static void ReplaceDurably(string path, ReadOnlySpan<byte> content)
    {
        var tmp = path + ".tmp";
        if (File.Exists(tmp)) File.Delete(tmp);
        using (var fs = CreateNew(tmp))
        {
            fs.Write(content);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        SpoolFiles.SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    public static void WriteFrame(IBufferWriter<byte> buffer, ReadOnlySpan<byte> payload)
    {
        var span = buffer.GetSpan(FrameHeader + payload.Length);
        BinaryPrimitives.WriteInt32LittleEndian(span, payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[4..], Crc32.HashToUInt32(payload));
        payload.CopyTo(span[FrameHeader..]);
        buffer.Advance(FrameHeader + payload.Length);
    }
}
