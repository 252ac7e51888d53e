// DsnRequest: one DSN to send, decided from a scheduler report by the RFC 3461 rules (NOTIFY, null sender)
// before anything is built. DsnPlanner is pure so the rules can be tested without MIME or a spool.
using System.Globalization;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Dsn;

/// <summary>Which RFC 3461 NOTIFY condition a DSN answers.</summary>
public enum DsnKind { Failure, Delay, Success }

/// <summary>One per-recipient group of the <c>message/delivery-status</c> part (RFC 3464 §2.3).</summary>
/// <param name="Action">RFC 3464 action: <c>failed</c>, <c>delayed</c>, <c>delivered</c> or <c>relayed</c>.</param>
/// <param name="Diagnostic">Full Diagnostic-Code value (<c>smtp; 550 5.1.1 ...</c>), or null when unknown.</param>
/// <param name="Reason">One line for the human-readable part.</param>
public sealed record DsnRecipient(
    int Index,
    string Address,
    string? OriginalRecipient,
    string Action,
    string Status,
    string? RemoteMta,
    string? Diagnostic,
    string Reason,
    DateTimeOffset? LastAttemptAt,
    DateTimeOffset? WillRetryUntil);

/// <summary>A DSN about message <paramref name="MessageId"/> to its envelope sender.</summary>
public sealed record DsnRequest(
    string MessageId,
    MessageEnvelope Original,
    DsnKind Kind,
    IReadOnlyList<DsnRecipient> Recipients,
    DateTimeOffset ReportedAt);

/// <summary>Turns scheduler reports into DSN requests (RFC 3461 §4.1, DESIGN.md "Spool and delivery promises").</summary>
public static class DsnPlanner
{
    /// <summary>Does a recipient with this NOTIFY want a DSN of this kind? No NOTIFY means FAILURE,DELAY.</summary>
    public static bool Wants(DsnNotify notify, DsnKind kind)
    {
        if (notify.HasFlag(DsnNotify.Never)) return false;
        if (notify == DsnNotify.Default) notify = DsnNotify.Failure | DsnNotify.Delay;
        return kind switch
        {
            DsnKind.Failure => notify.HasFlag(DsnNotify.Failure),
            DsnKind.Delay => notify.HasFlag(DsnNotify.Delay),
            _ => notify.HasFlag(DsnNotify.Success),
        };
    }

    /// <summary>
    /// Final recipients → at most one failure DSN (failed and expired recipients together) and one success DSN.
    /// Nothing for a message from <c>&lt;&gt;</c>. Last-Attempt-Date is the reported <see cref="ReportedRecipient.LastAttemptAt"/>;
    /// without it (a report repeated after a restart) <paramref name="now"/> stands in.
    /// </summary>
    public static IReadOnlyList<DsnRequest> ForFinal(DeliveryReport report, DateTimeOffset now)
    {
        if (report.Envelope.Sender.Length == 0) return [];
        var failed = new List<DsnRecipient>();
        var succeeded = new List<DsnRecipient>();
        foreach (var r in report.Recipients)
        {
            switch (r.Status)
            {
                case RecipientStatus.Failed or RecipientStatus.Expired when Wants(r.Entry.Notify, DsnKind.Failure):
                    failed.Add(Failed(r, now));
                    break;
                case RecipientStatus.Delivered when Wants(r.Entry.Notify, DsnKind.Success):
                    succeeded.Add(Delivered(r, now));
                    break;
            }
        }
        var requests = new List<DsnRequest>(2);
        if (failed.Count > 0) requests.Add(new(report.MessageId, report.Envelope, DsnKind.Failure, failed, now));
        if (succeeded.Count > 0) requests.Add(new(report.MessageId, report.Envelope, DsnKind.Success, succeeded, now));
        return requests;
    }

    /// <summary>
    /// Pending recipients whose notify time passed → one delay DSN, or null. Last-Attempt-Date is the reported
    /// <see cref="ReportedRecipient.LastAttemptAt"/>; without it, derived from the next attempt minus the schedule's
    /// retry interval when <paramref name="schedules"/> knows the schedule.
    /// </summary>
    public static DsnRequest? ForDelay(DeliveryReport report, DateTimeOffset now,
                                       IReadOnlyDictionary<string, ScheduleSettings>? schedules = null)
    {
        if (report.Envelope.Sender.Length == 0) return null;
        var delayed = report.Recipients
            .Where(r => r.Status == RecipientStatus.Pending && Wants(r.Entry.Notify, DsnKind.Delay))
            .Select(r => Delayed(r, schedules))
            .ToList();
        return delayed.Count == 0 ? null : new(report.MessageId, report.Envelope, DsnKind.Delay, delayed, now);
    }

    private static DsnRecipient Failed(ReportedRecipient r, DateTimeOffset now) => new(
        r.Index, r.Entry.Address, r.Entry.OriginalRecipient, "failed",
        ValidStatus(r.LastError?.EnhancedStatus, '5'),
        r.LastError?.RemoteHost, DiagnosticOf(r.LastError, r.Status), ReasonOf(r.LastError, "delivery failed"),
        r.LastAttemptAt ?? (r.Attempts > 0 ? now : null), null);

    // A delivered recipient's LastError is the temporary error of an earlier attempt, not this delivery's reply:
    // the scheduler keeps no success reply or host, so neither Remote-MTA nor Diagnostic-Code is given.
    // "relayed" (RFC 3464 §2.3.3) when the next hop did not offer DSN, so NOTIFY could not be passed on.
    private static DsnRecipient Delivered(ReportedRecipient r, DateTimeOffset now) => new(
        r.Index, r.Entry.Address, r.Entry.OriginalRecipient, r.Relayed ? "relayed" : "delivered", "2.0.0",
        null, null, r.Relayed ? "relayed to a server that does not send delivery notifications" : "delivered",
        r.LastAttemptAt ?? now, null);

    private static DsnRecipient Delayed(ReportedRecipient r, IReadOnlyDictionary<string, ScheduleSettings>? schedules)
    {
        var lastAttempt = r.LastAttemptAt;
        if (lastAttempt is null && r.Attempts > 0 && r.NextAttemptAt is { } next && schedules?.TryGetValue(r.Entry.Schedule, out var schedule) == true)
            lastAttempt = next - schedule.RetryDelay(r.Attempts);
        return new(r.Index, r.Entry.Address, r.Entry.OriginalRecipient, "delayed",
            ValidStatus(r.LastError?.EnhancedStatus, '4'),
            r.LastError?.RemoteHost, DiagnosticOf(r.LastError, r.Status),
            ReasonOf(r.LastError, r.Attempts == 0 ? "not tried yet" : "temporary failure"),
            lastAttempt, r.WillRetryUntil);
    }

    /// <summary>RFC 3463 <c>class.subject.detail</c> of the right class, or <c>class.0.0</c>.</summary>
    internal static string ValidStatus(string? status, char expectedClass)
    {
        if (status is not null)
        {
            var parts = status.Split('.');
            if (parts.Length == 3 && parts.All(p => p.Length is > 0 and <= 3 && p.All(char.IsAsciiDigit)) &&
                (parts[0] == expectedClass.ToString() || (expectedClass == '5' && parts[0] == "4")))
                return status;   // a failed recipient may carry 4.x.x: expiry (4.4.7) or out of attempts (last error)
        }
        return $"{expectedClass}.0.0";
    }

    /// <summary>
    /// <c>smtp; &lt;reply&gt;</c> for what a remote server said (RFC 3464 §2.3.6); our own decisions (TTL expiry,
    /// errors without a reply such as DNS or connection failures) use the extension type <c>X-Relay</c>.
    /// </summary>
    internal static string? DiagnosticOf(DeliveryError? error, RecipientStatus status)
    {
        if (error is null) return null;
        var text = OneLine(error.Text);
        var code = error.Code.ToString(CultureInfo.InvariantCulture);
        var isReply = error.Code is >= 200 and <= 599;
        if (isReply && text.StartsWith(code, StringComparison.Ordinal)) return "smtp; " + text;
        if ((status == RecipientStatus.Expired && error.EnhancedStatus == RecipientPolicy.ExpiredStatus) || !isReply)
            return text.Length == 0 ? null : "X-Relay; " + text;
        if (text.StartsWith(error.EnhancedStatus, StringComparison.Ordinal)) return $"smtp; {code} {text}";
        return $"smtp; {code} {error.EnhancedStatus} {text}".TrimEnd();
    }

    private static string ReasonOf(DeliveryError? error, string fallback)
    {
        if (error is null) return fallback;
        var text = OneLine(error.Text);
        if (text.Length == 0) text = fallback;
        if (error.Code is >= 200 and <= 599 && !text.StartsWith(error.Code.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal) &&
            error.EnhancedStatus != RecipientPolicy.ExpiredStatus)
            text = $"{error.Code} {text}";
        return error.RemoteHost is { } host ? $"host {host} said: {text}" : text;
    }

    /// <summary>A reply or error text as one header-safe line (multi-line replies joined by spaces).</summary>
    internal static string OneLine(string? text)
    {
        if (string.IsNullOrEmpty(text)) return "";
        var chars = text.Select(c => char.IsControl(c) ? ' ' : c).ToArray();
        return string.Join(' ', new string(chars).Split(' ', StringSplitOptions.RemoveEmptyEntries));
    }
}
