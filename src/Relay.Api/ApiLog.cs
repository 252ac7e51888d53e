// ApiLog: source-generated log lines of the HTTP submission API (event ids 8xxx).
using Microsoft.Extensions.Logging;

namespace Relay.Api;

internal static partial class ApiLog
{
    [LoggerMessage(8001, LogLevel.Information, "HTTP submission API listening on {Address}")]
    public static partial void Listening(this ILogger logger, string address);

    [LoggerMessage(8002, LogLevel.Information, "{MessageId}: from=<{Sender}>, client={Client}, size={Size}, nrcpt={Recipients}, priority={Priority}, not-before={NotBefore} (queued by api)")]
    public static partial void Queued(this ILogger logger, string messageId, string sender, string client, long size, int recipients, int priority, string notBefore);

    [LoggerMessage(8003, LogLevel.Warning, "api: unauthorized {Method} {Path} from {Remote}")]
    public static partial void Unauthorized(this ILogger logger, string method, string path, string? remote);

    [LoggerMessage(8004, LogLevel.Warning, "api: client {Client} may not send as <{Sender}>")]
    public static partial void SenderRefused(this ILogger logger, string client, string sender);

    [LoggerMessage(8005, LogLevel.Error, "api: {MessageId}: not queued: {Reason}")]
    public static partial void SpoolFailed(this ILogger logger, string messageId, string reason, Exception exception);

    [LoggerMessage(8006, LogLevel.Warning, "api: strategy rule failed for <{Recipient}>, used schedule {Schedule}: {Error}")]
    public static partial void ClassificationFellBack(this ILogger logger, string recipient, string schedule, string error);

    [LoggerMessage(8007, LogLevel.Error, "api: request {Method} {Path} failed")]
    public static partial void RequestFailed(this ILogger logger, Exception exception, string method, string path);

    [LoggerMessage(8008, LogLevel.Warning, "api: {Path}: {Problem}")]
    public static partial void IdempotencyFileProblem(this ILogger logger, string path, string problem);

    [LoggerMessage(8009, LogLevel.Error, "api: {MessageId}: queued, but recording its accepted event failed")]
    public static partial void AcceptedEventFailed(this ILogger logger, string messageId, Exception exception);

    [LoggerMessage(8010, LogLevel.Information, "api: reloaded: {Clients} client(s); cached token checks dropped")]
    public static partial void Reconfigured(this ILogger logger, int clients);

    [LoggerMessage(8011, LogLevel.Information, "api: {Path}: compacted to {Live} live key(s)")]
    public static partial void IdempotencyCompacted(this ILogger logger, string path, int live);
}
