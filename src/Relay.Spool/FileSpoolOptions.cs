// FileSpoolOptions: knobs of the file spool that are not part of the config file.
namespace Relay.Spool;

public sealed class FileSpoolOptions
{
    /// <summary>How long a message with failed recipients is kept as a dead letter (<c>[spool] retention</c>).</summary>
    public TimeSpan Retention { get; init; } = TimeSpan.FromDays(7);

    /// <summary>Journal bytes written since the last snapshot that trigger a new snapshot (also: twice the last snapshot).</summary>
    public long CompactionBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>
    /// Messages up to this size (bytes as received) are kept inline in the journal: accepting one costs no file, no
    /// file and directory fsync and no unlink, only its share of the group commit. Bigger ones get their own file
    /// under msg/ and are streamed, never held in memory. 0 = every message gets a file.
    /// </summary>
    public int InlineLimit { get; init; } = 64 * 1024;

    /// <summary>Test hook: return an exception to make the named write ("data" or "journal") fail.</summary>
    internal Func<string, Exception?>? Fault { get; init; }
}
