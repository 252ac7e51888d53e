// ObservedDeliveryReports: sits between the scheduler and the DSN stage. Every final recipient passes here once
// its state is durable, so this is where final results, arrival→delivery latency (histogram and SLA window) and
// DSN counts are taken. Counting happens after the inner stage returns: a report the scheduler must repeat
// (the DSN stage threw) is counted when it finally goes through.
using Relay.Admin.Metrics;
using Relay.Scheduler;
using Relay.Spool;
using Relay.Dsn;

namespace Relay.Admin.Observation;

public sealed class ObservedDeliveryReports(
    IDeliveryReports inner, RelayMetrics metrics, SlaTracker sla, DeliveryHistory history, TimeProvider clock,
    bool countDsns = true) : IDeliveryReports
{
    public async ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        await inner.RecipientsFinalAsync(report, cancellationToken);
        var now = clock.GetUtcNow();
        var latency = now - report.Envelope.ArrivedAt;
        foreach (var r in report.Recipients)
        {
            var result = r.Status switch
            {
                RecipientStatus.Delivered => "delivered",
                RecipientStatus.Expired => "expired",
                _ => "failed",
            };
            metrics.RecipientFinal(r.Entry.Queue, result, latency);
            // A 5xx bounce is not a late delivery; an expired recipient missed any target shorter than its TTL.
            if (r.Status is RecipientStatus.Delivered or RecipientStatus.Expired)
                sla.Record(r.Entry.Queue, latency, delivered: r.Status == RecipientStatus.Delivered);
        }
        if (report.Envelope.Sender.Length == 0) return;   // never a DSN about a DSN (DESIGN.md)
        var failed = report.Recipients.Where(r => r.Status != RecipientStatus.Delivered && DsnPlanner.Wants(r.Entry.Notify, DsnKind.Failure)).ToList();
        var relayed = report.Recipients.Where(r => r.Status == RecipientStatus.Delivered && r.Entry.Notify.HasFlag(DsnNotify.Success)).ToList();
        if (failed.Count > 0) Dsn(report, "failure", failed, now);
        if (relayed.Count > 0) Dsn(report, "success", relayed, now);
    }

    public async ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        await inner.DelayedAsync(report, cancellationToken);
        if (report.Envelope.Sender.Length == 0) return;
        var delayed = report.Recipients.Where(r => DsnPlanner.Wants(r.Entry.Notify, DsnKind.Delay)).ToList();
        if (delayed.Count > 0) Dsn(report, "delay", delayed, clock.GetUtcNow());
    }

    private void Dsn(DeliveryReport report, string kind, List<ReportedRecipient> recipients, DateTimeOffset now)
    {
        if (countDsns) metrics.DsnSent(kind);
        history.AddDsn(report.MessageId, new DsnRecord(now, kind, recipients.Select(r => r.Entry.Address).ToList()));
    }
}
