// SpoolFiles: file-system primitives the spool's durability rests on: private modes, fsync of files and directories.
// Public because the delivery-event log (Relay.Events) keeps its own durable files by the same rules.
using System.Runtime.InteropServices;

namespace Relay.Spool;

public static class SpoolFiles
{
    public const UnixFileMode FileMode600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    public const UnixFileMode DirMode700 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    public static void CreatePrivateDirectory(string path)
    {
        if (OperatingSystem.IsWindows()) { Directory.CreateDirectory(path); return; }
        Directory.CreateDirectory(path, DirMode700);
        // CreateDirectory leaves an existing directory alone; tighten it anyway (the umask may have been looser).
        File.SetUnixFileMode(path, DirMode700);
    }

    public static FileStream CreateNew(string path, int bufferSize = 64 * 1024)
    {
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.Read,
            BufferSize = bufferSize,
        };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = FileMode600;
        return new FileStream(path, options);
    }

    /// <summary>
    /// fsync a directory so that creations, renames and deletions inside it survive a crash
    /// (POSIX: fsync of the file alone does not cover its directory entry).
    /// </summary>
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
