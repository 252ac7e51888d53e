// EventingDeliveryReports: sits between the scheduler and the DSN stage (outside ObservedDeliveryReports) and
// records the final events (delivered / failed / expired), "bounced" for each recipient a failure DSN goes to
// the sender about, and "delayed-dsn-sent" — after the inner stage returned, so a report the scheduler repeats
// (the DSN stage threw) is recorded when it goes through. If the log cannot write, this throws and the scheduler
// repeats the report later: events are not lost, at the price of a possibly repeated DSN (rare: same disk).
using Relay.Scheduler;
using Relay.Spool;
using Relay.Dsn;

namespace Relay.Events;

public sealed class EventingDeliveryReports(IDeliveryReports inner, DeliveryEventLog log, TimeProvider clock) : IDeliveryReports
{
    public ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken) =>
        DeliveryEventLog.IsApi(report.Envelope) ? FinalAndRecordAsync(report, cancellationToken) : inner.RecipientsFinalAsync(report, cancellationToken);

    public ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken) =>
        DeliveryEventLog.IsApi(report.Envelope) ? DelayedAndRecordAsync(report, cancellationToken) : inner.DelayedAsync(report, cancellationToken);

    private async ValueTask FinalAndRecordAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        await inner.RecipientsFinalAsync(report, cancellationToken);
        var now = clock.GetUtcNow();
        var events = new List<StoredEvent>(report.Recipients.Count * 2);
        foreach (var r in report.Recipients) events.Add(Final(log, report.MessageId, r, now));
        if (report.Envelope.Sender.Length > 0)   // never a DSN about a DSN (DESIGN.md)
        {
            foreach (var r in report.Recipients)
            {
                if (r.Status == RecipientStatus.Delivered || !DsnPlanner.Wants(r.Entry.Notify, DsnKind.Failure)) continue;
                events.Add(new StoredEvent
                {
                    Type = DeliveryEventType.Bounced, Rcpt = r.Index, Address = r.Entry.Address, At = now, Attempt = r.Attempts,
                    Code = r.LastError?.Code ?? 0, Status = r.LastError?.EnhancedStatus, Text = "failure notice sent to " + report.Envelope.Sender,
                });
            }
        }
        await log.AppendAsync(report.Envelope, events).WaitAsync(cancellationToken);
    }

    internal static StoredEvent Final(DeliveryEventLog log, string messageId, ReportedRecipient r, DateTimeOffset now)
    {
        var outcome = log.TakeOutcome(messageId, r.Index);
        var e = new StoredEvent
        {
            Type = r.Status switch
            {
                RecipientStatus.Delivered => DeliveryEventType.Delivered,
                RecipientStatus.Expired => DeliveryEventType.Expired,
                _ => DeliveryEventType.Failed,
            },
            Rcpt = r.Index, Address = r.Entry.Address, At = now, Attempt = r.Attempts,
        };
        if (r.Status == RecipientStatus.Delivered)
        {
            // The reply is only known in this process (the agent's outcome); after a restart it is a plain 250.
            e.Code = outcome?.Code ?? 250;
            e.Status = outcome?.EnhancedStatus ?? "2.0.0";
            e.Text = outcome?.Text ?? "delivered";
            e.Host = outcome?.RemoteHost;
        }
        else if (r.LastError is { } error)
        {
            e.Code = error.Code;
            e.Status = error.EnhancedStatus;
            e.Text = error.Text;
            e.Host = error.RemoteHost;
        }
        return e;
    }

    private async ValueTask DelayedAndRecordAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        await inner.DelayedAsync(report, cancellationToken);
        if (report.Envelope.Sender.Length == 0) return;
        var now = clock.GetUtcNow();
        var events = report.Recipients.Where(r => DsnPlanner.Wants(r.Entry.Notify, DsnKind.Delay)).Select(r => new StoredEvent
        {
            Type = DeliveryEventType.DelayedDsnSent, Rcpt = r.Index, Address = r.Entry.Address, At = now, Attempt = r.Attempts,
            Code = r.LastError?.Code ?? 0, Status = r.LastError?.EnhancedStatus, Text = r.LastError?.Text,
            Host = r.LastError?.RemoteHost,
        }).ToList();
        if (events.Count > 0) await log.AppendAsync(report.Envelope, events).WaitAsync(cancellationToken);
    }
}
