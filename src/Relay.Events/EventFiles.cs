// EventFiles: the file primitives the event log's durability rests on (private modes, fsync of directories,
// CRC-32 framing). Same rules as the spool's (src/Relay.Spool/SpoolFiles.cs), which keeps its own internal.
using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Relay.Events;

internal static class EventFiles
{
    public const UnixFileMode FileMode600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    public const UnixFileMode DirMode700 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>Frame header: i32 payload length, u32 CRC-32 of the payload.</summary>
    public const int FrameHeader = 8;
    public const int MaxRecord = 16 * 1024 * 1024;

    public static void CreatePrivateDirectory(string path)
    {
        if (OperatingSystem.IsWindows()) { Directory.CreateDirectory(path); return; }
        Directory.CreateDirectory(path, DirMode700);
        File.SetUnixFileMode(path, DirMode700);   // an existing directory may have been created looser
    }

    public static FileStream CreateNew(string path)
    {
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.Read,
            BufferSize = 0,
        };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = FileMode600;
        return new FileStream(path, options);
    }

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

    /// <summary>fsync a directory so that creations, renames and deletions inside it survive a crash.</summary>
    public static void SyncDirectory(string path)
    {
        if (OperatingSystem.IsWindows()) return;
        var fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw new IOException($"open({path}) for fsync failed: errno {Marshal.GetLastPInvokeError()}");
        try
        {
            if (fsync(fd) != 0) throw new IOException($"fsync({path}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally { close(fd); }
    }

    private const int O_RDONLY = 0;
    private const int O_DIRECTORY = 0x10000;   // Linux value
    private const int O_CLOEXEC = 0x80000;

    [DllImport("libc", SetLastError = true)]
    private static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int fsync(int fd);

    [DllImport("libc", SetLastError = true)]
    private static extern int close(int fd);
}

/// <summary>IEEE CRC-32 (the spool's is internal to Relay.Spool).</summary>
internal static class Crc32
{
    private static readonly uint[] Table = BuildTable();

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var crc = ~0u;
        foreach (var b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return ~crc;
    }

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            var c = i;
            for (var k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        return table;
    }
}
