// DsnLog: the DSN stage's log events (ids 5xxx). Lines start with the queue id, Postfix style.
using Microsoft.Extensions.Logging;

namespace Relay.Dsn;

internal static partial class DsnLog
{
    [LoggerMessage(5001, LogLevel.Information, "{MessageId}: sender {Kind} notice: {DsnId}, to=<{Sender}>, recipients={Recipients}, returned={Returned}, schedule={Schedule}, queue={Queue}")]
    public static partial void Sent(this ILogger logger, string messageId, string kind, string dsnId, string sender, string recipients,
                                    string returned, string schedule, string queue);

    [LoggerMessage(5002, LogLevel.Warning, "{MessageId}: to=<{Recipient}>, status={Status}: message from <> ({Source}), no DSN is sent; dropped ({Reason})")]
    public static partial void NullSenderDropped(this ILogger logger, string messageId, string recipient, string status, string source, string reason);

    [LoggerMessage(5003, LogLevel.Warning, "{MessageId}: original message unreadable, DSN goes without it: {Reason}")]
    public static partial void OriginalUnreadable(this ILogger logger, string messageId, string reason);

    [LoggerMessage(5004, LogLevel.Warning, "{MessageId}: strategy rule failed for a DSN, fallback schedule used: {Reason}")]
    public static partial void StrategyFailed(this ILogger logger, string messageId, string reason);

    [LoggerMessage(5005, LogLevel.Error, "{MessageId}: could not queue the {Kind} notice: {Reason}")]
    public static partial void QueueFailed(this ILogger logger, string messageId, string kind, string reason);
}
