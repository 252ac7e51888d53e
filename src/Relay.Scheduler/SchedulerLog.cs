// SchedulerLog: the scheduler's log events (ids 3xxx). Delivery lines start with the queue id, Postfix style.
using Microsoft.Extensions.Logging;

namespace Relay.Scheduler;

internal static partial class SchedulerLog
{
    [LoggerMessage(3001, LogLevel.Information, "scheduler ready: {Messages} messages loaded from the spool in {Milliseconds:F0} ms")]
    public static partial void Ready(this ILogger logger, int messages, double milliseconds);

    [LoggerMessage(3002, LogLevel.Error, "{MessageId}: delivery agent failed, treated as a temporary failure")]
    public static partial void AgentCrashed(this ILogger logger, string messageId, Exception exception);

    [LoggerMessage(3003, LogLevel.Information, "{MessageId}: to=<{Recipient}>, status={Status}, attempts={Attempts}, next={NextAttempt:O} ({Reason})")]
    public static partial void Outcome(this ILogger logger, string messageId, string recipient, string status, int attempts, DateTimeOffset? nextAttempt, string reason);

    [LoggerMessage(3004, LogLevel.Error, "{MessageId}: could not record delivery state: {Reason}")]
    public static partial void SettleFailed(this ILogger logger, string messageId, string reason);

    [LoggerMessage(3005, LogLevel.Error, "{MessageId}: DSN stage failed, will retry: {Reason}")]
    public static partial void ReportFailed(this ILogger logger, string messageId, string reason);

    [LoggerMessage(3006, LogLevel.Warning, "schedule '{Schedule}' is not configured; recipients using it get a fallback schedule")]
    public static partial void UnknownSchedule(this ILogger logger, string schedule);

    [LoggerMessage(3007, LogLevel.Warning, "virtual queue '{Queue}' is not configured; it runs with {Threads} threads")]
    public static partial void UnknownQueue(this ILogger logger, string queue, int threads);

    [LoggerMessage(3008, LogLevel.Error, "{MessageId}: unreadable in the spool, quarantined")]
    public static partial void MessageQuarantined(this ILogger logger, string messageId);

    [LoggerMessage(3009, LogLevel.Error, "scheduler loop failed")]
    public static partial void LoopFailed(this ILogger logger, Exception exception);

    [LoggerMessage(3010, LogLevel.Information, "reload: {Schedules} schedules, {Queues} virtual queues; {Moved} queued recipients moved (a removed schedule's go to '{Fallback}')")]
    public static partial void Reconfigured(this ILogger logger, int schedules, int queues, int moved, string fallback);

    [LoggerMessage(3011, LogLevel.Information, "{MessageId}: retry requested by the operator for {Recipients} recipients")]
    public static partial void RetryRequested(this ILogger logger, string messageId, int recipients);

    [LoggerMessage(3012, LogLevel.Information, "{MessageId}: dead letter queued again by the operator ({Recipients} recipients)")]
    public static partial void Requeued(this ILogger logger, string messageId, int recipients);

    [LoggerMessage(3013, LogLevel.Information, "{MessageId}: removed by the operator ({Recipients} pending recipients, bounced={Bounced})")]
    public static partial void Cancelled(this ILogger logger, string messageId, int recipients, bool bounced);

    [LoggerMessage(3014, LogLevel.Information, "{MessageId}: to=<{Recipient}>, status=expired, attempts={Attempts}, schedule={Schedule} ({Reason})")]
    public static partial void Expired(this ILogger logger, string messageId, string recipient, int attempts, string schedule, string reason);

    [LoggerMessage(3015, LogLevel.Warning, "{MessageId}: the operations observer failed ({Operation}): {Reason}")]
    public static partial void ObserverFailed(this ILogger logger, string messageId, string operation, string reason);
}
