// DeliveryLog: source-generated log events of the delivery stage (event ids 4000–4999), Postfix-style lines
// that start with the queue id. Never logs message bodies or smart-host passwords.
using Microsoft.Extensions.Logging;

namespace Relay.Delivery;

internal static partial class DeliveryLog
{
    [LoggerMessage(4001, LogLevel.Information, "{MessageId}: to=<{Recipient}>, relay={Relay}, delay={Delay:0.##}, dsn={Dsn}, status=sent ({Reply})")]
    public static partial void Sent(this ILogger logger, string messageId, string recipient, string relay, double delay, string dsn, string reply);

    [LoggerMessage(4002, LogLevel.Information, "{MessageId}: to=<{Recipient}>, relay={Relay}, delay={Delay:0.##}, dsn={Dsn}, status=deferred ({Reply})")]
    public static partial void Deferred(this ILogger logger, string messageId, string recipient, string relay, double delay, string dsn, string reply);

    [LoggerMessage(4003, LogLevel.Information, "{MessageId}: to=<{Recipient}>, relay={Relay}, delay={Delay:0.##}, dsn={Dsn}, status=bounced ({Reply})")]
    public static partial void Bounced(this ILogger logger, string messageId, string recipient, string relay, double delay, string dsn, string reply);

    [LoggerMessage(4010, LogLevel.Debug, "{MessageId}: {Relay}: {Reason}; trying the next host")]
    public static partial void HostFailed(this ILogger logger, string messageId, string relay, string reason);

    [LoggerMessage(4011, LogLevel.Debug, "{Relay}: reused connection failed before MAIL FROM was answered; reconnecting")]
    public static partial void StaleConnection(this ILogger logger, string relay);

    [LoggerMessage(4020, LogLevel.Error, "{MessageId}: unexpected delivery error")]
    public static partial void Unexpected(this ILogger logger, string messageId, Exception error);
}
