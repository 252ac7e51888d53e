// SpoolLog: the spool's log events (ids 2xxx, STYLE.md §8.14). Every message line starts with the queue id.
using Microsoft.Extensions.Logging;

namespace Relay.Spool;

internal static partial class SpoolLog
{
    [LoggerMessage(2001, LogLevel.Information, "spool opened at {Path}: {Messages} messages, {Recipients} pending recipients in {Milliseconds:F0} ms")]
    public static partial void Opened(this ILogger logger, string path, int messages, long recipients, double milliseconds);

    [LoggerMessage(2002, LogLevel.Warning, "journal {Segment}: torn record at offset {Offset} ({Bytes} bytes at the tail ignored; normal after a crash)")]
    public static partial void TornTail(this ILogger logger, string segment, long offset, long bytes);

    [LoggerMessage(2003, LogLevel.Error, "journal {Segment}: corrupt record at offset {Offset}, skipped {Bytes} bytes; a copy is in quarantine/")]
    public static partial void CorruptRecord(this ILogger logger, string segment, long offset, long bytes);

    [LoggerMessage(2004, LogLevel.Error, "journal {Segment} unreadable: {Reason}")]
    public static partial void SegmentUnreadable(this ILogger logger, string segment, string reason);

    [LoggerMessage(2005, LogLevel.Error, "{MessageId}: quarantined: {Reason}")]
    public static partial void Quarantined(this ILogger logger, string messageId, string reason);

    [LoggerMessage(2006, LogLevel.Error, "spool journal write failed: {Reason}")]
    public static partial void JournalWriteFailed(this ILogger logger, string reason);

    [LoggerMessage(2007, LogLevel.Information, "journal compacted: {Records} live records, {Bytes} bytes in {Milliseconds:F0} ms")]
    public static partial void Compacted(this ILogger logger, long records, long bytes, double milliseconds);

    [LoggerMessage(2008, LogLevel.Error, "journal compaction failed: {Reason}")]
    public static partial void CompactionFailed(this ILogger logger, string reason);

    [LoggerMessage(2009, LogLevel.Information, "{Count} message files without a journal entry deleted (never acknowledged)")]
    public static partial void OrphansDeleted(this ILogger logger, int count);

    [LoggerMessage(2010, LogLevel.Warning, "{MessageId}: rescued from its message file (journal entry lost); all recipients pending again")]
    public static partial void Rescued(this ILogger logger, string messageId);

    [LoggerMessage(2011, LogLevel.Error, "could not quarantine {Path}: {Reason}")]
    public static partial void QuarantineFailed(this ILogger logger, string path, string reason);

    [LoggerMessage(2012, LogLevel.Warning, "{MessageId}: could not delete message file: {Reason}")]
    public static partial void DeleteFailed(this ILogger logger, string messageId, string reason);

    [LoggerMessage(2013, LogLevel.Error, "{MessageId}: could not store the message: {Reason}")]
    public static partial void CommitFailed(this ILogger logger, string messageId, string reason);
}
