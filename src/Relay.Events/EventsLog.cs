// EventsLog: the delivery-event stage's log lines (ids 85xx; STYLE.md §8.14 ranges stop at Admin 7xxx).
using Microsoft.Extensions.Logging;

namespace Relay.Events;

internal static partial class EventsLog
{
    [LoggerMessage(8501, LogLevel.Information, "event log opened at {Path}: {Messages} messages, last sequence {Sequence}, {Segments} segments")]
    public static partial void Opened(this ILogger logger, string path, int messages, long sequence, int segments);

    [LoggerMessage(8502, LogLevel.Warning, "event log {Segment}: torn record at offset {Offset} ({Bytes} bytes at the tail ignored; normal after a crash)")]
    public static partial void TornTail(this ILogger logger, string segment, long offset, long bytes);

    [LoggerMessage(8503, LogLevel.Error, "event log {Segment}: corrupt record at offset {Offset}, skipped {Bytes} bytes")]
    public static partial void CorruptRecord(this ILogger logger, string segment, long offset, long bytes);

    [LoggerMessage(8504, LogLevel.Error, "event log write failed: {Reason}")]
    public static partial void WriteFailed(this ILogger logger, string reason);

    [LoggerMessage(8505, LogLevel.Information, "event log purge: {Messages} messages past retention, {Segments} segment files deleted")]
    public static partial void Purged(this ILogger logger, int messages, int segments);

    [LoggerMessage(8506, LogLevel.Error, "event log purge failed: {Reason}")]
    public static partial void PurgeFailed(this ILogger logger, string reason);

    [LoggerMessage(8507, LogLevel.Error, "{MessageId}: delivery events could not be recorded: {Reason}")]
    public static partial void RecordFailed(this ILogger logger, string messageId, string reason);

    [LoggerMessage(8510, LogLevel.Warning, "webhook {Client}: event {Sequence} not accepted ({Reason}); retry {Attempt} in {Delay}")]
    public static partial void WebhookRetry(this ILogger logger, string client, long sequence, string reason, int attempt, TimeSpan delay);

    [LoggerMessage(8511, LogLevel.Warning, "webhook {Client}: cursor {Cursor} is past the log's last event {Last} (log reset?); starting after {Last}")]
    public static partial void CursorAhead(this ILogger logger, string client, long cursor, long last);

    [LoggerMessage(8512, LogLevel.Error, "webhook {Client}: reading the log or saving the cursor failed, retrying later: {Reason}")]
    public static partial void WebhookCrashed(this ILogger logger, string client, string reason);

    [LoggerMessage(8513, LogLevel.Warning, "webhook {Client}: unreadable cursor file {Path}; starting from the beginning of the log")]
    public static partial void CursorUnreadable(this ILogger logger, string client, string path);
}
