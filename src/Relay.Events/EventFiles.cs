// EventFiles: the event log's file primitives: the spool's durable-file rules (SpoolFiles: private modes,
// fsync of directories) and its CRC-32, plus the framing and whole-file replacement only the event log needs.
using System.Buffers;
using System.Buffers.Binary;
using Relay.Spool;

namespace Relay.Events;

internal static class EventFiles
{
    public const UnixFileMode FileMode600 = SpoolFiles.FileMode600;
    public const UnixFileMode DirMode700 = SpoolFiles.DirMode700;

    /// <summary>Frame header: i32 payload length, u32 CRC-32 of the payload.</summary>
    public const int FrameHeader = 8;
    public const int MaxRecord = 16 * 1024 * 1024;

    public static void CreatePrivateDirectory(string path) => SpoolFiles.CreatePrivateDirectory(path);

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
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    public static void WriteFrame(IBufferWriter<byte> buffer, ReadOnlySpan<byte> payload)
    {
        var span = buffer.GetSpan(FrameHeader + payload.Length);
        BinaryPrimitives.WriteInt32LittleEndian(span, payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[4..], Crc32.Compute(payload));
        payload.CopyTo(span[FrameHeader..]);
        buffer.Advance(FrameHeader + payload.Length);
    }

    public static void SyncDirectory(string path) => SpoolFiles.SyncDirectory(path);
}
