// AdminLog: the admin stage's log events (7xxx, STYLE 8.14).
using Microsoft.Extensions.Logging;

namespace Relay.Admin;

internal static partial class AdminLog
{
    [LoggerMessage(7001, LogLevel.Information, "admin API listening on {Address}")]
    public static partial void Listening(this ILogger logger, string address);

    [LoggerMessage(7002, LogLevel.Warning, "queue {Queue}: delivery p95 {P95:0.#}s is over the SLA of {Target:0.#}s ({Samples} deliveries in the last {Window})")]
    public static partial void SlaExceeded(this ILogger logger, string queue, double p95, double target, int samples, TimeSpan window);

    [LoggerMessage(7003, LogLevel.Warning, "admin API: refused {Method} {Path} from {Remote}: missing or wrong X-API-Token")]
    public static partial void Unauthorized(this ILogger logger, string method, string path, string? remote);

    // 7004–7006 (retry/requeue/delete) moved to the scheduler, which does them now (events 3011–3013).

    [LoggerMessage(7007, LogLevel.Information, "config reload: {Result}")]
    public static partial void Reloaded(this ILogger logger, string result);

    [LoggerMessage(7008, LogLevel.Warning, "config reload refused: {Error}")]
    public static partial void ReloadRefused(this ILogger logger, string error);

    [LoggerMessage(7009, LogLevel.Error, "admin API: {Method} {Path} failed")]
    public static partial void RequestFailed(this ILogger logger, Exception exception, string method, string path);
}
