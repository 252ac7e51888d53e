// InboundLog: source-generated log events of the inbound stage (event ids 1000–1999).
// Never logs message bodies or AUTH secrets.
using System.Net;
using Microsoft.Extensions.Logging;

namespace Relay.Inbound;

internal static partial class InboundLog
{
    [LoggerMessage(1001, LogLevel.Information, "connect from {RemoteIp} on listener {Listener}")]
    public static partial void Connected(this ILogger logger, IPAddress remoteIp, string listener);

    [LoggerMessage(1002, LogLevel.Information, "disconnect from {RemoteIp} ({Commands} commands, {Errors} errors)")]
    public static partial void Disconnected(this ILogger logger, IPAddress remoteIp, int commands, int errors);

    [LoggerMessage(1003, LogLevel.Information, "{MessageId}: from=<{Sender}>, size={Size}, nrcpt={Recipients}, priority={Priority}, schedule={Schedule} (queued)")]
    public static partial void Queued(this ILogger logger, string messageId, string sender, long size, int recipients, int priority, string schedule);

    [LoggerMessage(1004, LogLevel.Information, "reject: RCPT from {RemoteIp}: {Reply}; to=<{Recipient}>")]
    public static partial void RecipientRejected(this ILogger logger, IPAddress remoteIp, string recipient, string reply);

    [LoggerMessage(1005, LogLevel.Error, "strategy failed for <{Recipient}>")]
    public static partial void ClassificationFailed(this ILogger logger, string recipient, Exception error);

    [LoggerMessage(1006, LogLevel.Warning, "strategy rule failed for <{Recipient}>, used schedule {Schedule}")]
    public static partial void ClassificationFellBack(this ILogger logger, string recipient, string schedule, Exception error);

    [LoggerMessage(1007, LogLevel.Information, "TLS handshake with {RemoteIp} failed: {Reason}")]
    public static partial void TlsFailed(this ILogger logger, IPAddress remoteIp, string reason);

    [LoggerMessage(1008, LogLevel.Warning, "AUTH {Mechanism} failed from {RemoteIp} for user {User}")]
    public static partial void AuthFailed(this ILogger logger, string mechanism, IPAddress remoteIp, string user);

    [LoggerMessage(1009, LogLevel.Information, "AUTH {Mechanism} from {RemoteIp} as {User}")]
    public static partial void AuthSucceeded(this ILogger logger, string mechanism, IPAddress remoteIp, string user);

    [LoggerMessage(1010, LogLevel.Error, "{MessageId}: spool failed, answered {Reply}")]
    public static partial void SpoolFailed(this ILogger logger, string messageId, string reply, Exception error);

    [LoggerMessage(1011, LogLevel.Error, "session with {RemoteIp} failed")]
    public static partial void SessionFailed(this ILogger logger, IPAddress remoteIp, Exception error);

    [LoggerMessage(1012, LogLevel.Information, "timeout after {Timeout} from {RemoteIp}")]
    public static partial void IdleTimeout(this ILogger logger, IPAddress remoteIp, TimeSpan timeout);

    [LoggerMessage(1013, LogLevel.Warning, "too many connections ({Limit}), refused {RemoteIp}")]
    public static partial void TooManyConnections(this ILogger logger, IPAddress remoteIp, int limit);

    [LoggerMessage(1014, LogLevel.Information, "{MessageId}: reject: DATA from {RemoteIp}: {Reply}")]
    public static partial void MessageRejected(this ILogger logger, string messageId, IPAddress remoteIp, string reply);

    [LoggerMessage(1015, LogLevel.Warning, "{RemoteIp} sent {Bytes} bytes after STARTTLS before the handshake; discarded")]
    public static partial void StartTlsPipelined(this ILogger logger, IPAddress remoteIp, long bytes);

    [LoggerMessage(1016, LogLevel.Warning, "back-pressure: virtual queue {Queue} is full, new recipients get 452 4.3.1")]
    public static partial void QueueFull(this ILogger logger, string queue);

    [LoggerMessage(1017, LogLevel.Information, "too many errors from {RemoteIp}, closing")]
    public static partial void TooManyErrors(this ILogger logger, IPAddress remoteIp);

    [LoggerMessage(1018, LogLevel.Information, "listener {Listener} started on {EndPoint}")]
    public static partial void ListenerStarted(this ILogger logger, string listener, string endPoint);

    [LoggerMessage(1019, LogLevel.Information, "listener {Listener} removed: no new connections, open sessions finish")]
    public static partial void ListenerStopped(this ILogger logger, string listener);

    [LoggerMessage(1020, LogLevel.Error, "listener change refused: {Reason}")]
    public static partial void ListenerChangeRefused(this ILogger logger, string reason);
}
