// RelayMetrics: the counters every stage bumps (inbound, delivery, DSN) and /metrics exposes. Thread-safe and
// lock-free on the hot path; queue gauges are not kept here but read from the scheduler and spool at scrape time.
namespace Relay.Admin.Metrics;

/// <summary>
/// Counters and histograms shared by all stages. One instance per process; the host creates it and hands it to
/// every stage that reports (see README "Metrics" for names and labels).
/// </summary>
public sealed class RelayMetrics
{
    /// <summary>Delivery latency buckets in seconds: 1 s … 3 d (urgent 5 min, normal 1 h, bulk 24 h lanes fall inside).</summary>
    public static readonly double[] LatencyBuckets =
        [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 259200];

    public Counter InboundSessions { get; } = new();
    public Gauge InboundSessionsActive { get; } = new();

    /// <summary>Labels: result (accepted|rejected), reply_class (2xx|4xx|5xx).</summary>
    public Family<Counter> InboundMessages { get; } =
        new("relay_inbound_messages_total", "Messages answered at the end of DATA/BDAT, by reply class.", ["result", "reply_class"], () => new Counter());

    /// <summary>Labels: result (accepted|rejected), reply_class (2xx|4xx|5xx).</summary>
    public Family<Counter> InboundRecipients { get; } =
        new("relay_inbound_recipients_total", "Recipients answered at RCPT, by reply class.", ["result", "reply_class"], () => new Counter());

    /// <summary>Labels: queue, result (delivered|temporary|permanent): every attempt, as the delivery agent reported it.</summary>
    public Family<Counter> DeliveryAttempts { get; } =
        new("relay_delivery_attempts_total", "Delivery attempts per recipient, by virtual queue and outcome.", ["queue", "result"], () => new Counter());

    /// <summary>Labels: queue, result (delivered|failed|expired): recipients that reached a final state.</summary>
    public Family<Counter> Deliveries { get; } =
        new("relay_deliveries_total", "Recipients that reached a final state, by virtual queue and result.", ["queue", "result"], () => new Counter());

    /// <summary>Label: queue. Arrival to final delivery, in seconds (delivered recipients only).</summary>
    public Family<Histogram> DeliveryLatency { get; } =
        new("relay_delivery_latency_seconds", "Time from arrival to successful delivery, per virtual queue.", ["queue"], () => new Histogram(LatencyBuckets));

    /// <summary>Label: kind (failure|delay|success).</summary>
    public Family<Counter> DsnsSent { get; } =
        new("relay_dsn_sent_total", "Delivery status notifications sent, by kind.", ["kind"], () => new Counter());

    /// <summary>Label: result (ok|refused|error).</summary>
    public Family<Counter> Reloads { get; } =
        new("relay_config_reloads_total", "Configuration reloads requested, by result.", ["result"], () => new Counter());

    // ------------------------------------------------------------ calls for the inbound stage

    public void SessionOpened()
    {
        InboundSessions.Increment();
        InboundSessionsActive.Increment();
    }

    public void SessionClosed() => InboundSessionsActive.Decrement();

    /// <summary>The reply to a message (after DATA or BDAT LAST): 250 accepted, 4xx/5xx rejected.</summary>
    public void MessageAnswered(int replyCode) => InboundMessages[ResultOf(replyCode), ClassOf(replyCode)].Increment();

    /// <summary>The reply to one RCPT TO.</summary>
    public void RecipientAnswered(int replyCode) => InboundRecipients[ResultOf(replyCode), ClassOf(replyCode)].Increment();

    // ------------------------------------------------------------ calls for delivery and DSN

    public void AttemptFinished(string queue, string result) => DeliveryAttempts[queue, result].Increment();

    public void RecipientFinal(string queue, string result, TimeSpan? latency)
    {
        Deliveries[queue, result].Increment();
        if (result == "delivered" && latency is { } l) DeliveryLatency[queue].Observe(Math.Max(0, l.TotalSeconds));
    }

    /// <summary>kind: <c>failure</c>, <c>delay</c> or <c>success</c> (RFC 3464 Action failed/delayed/relayed).</summary>
    public void DsnSent(string kind) => DsnsSent[kind].Increment();

    public static string ClassOf(int replyCode) => replyCode switch
    {
        >= 200 and < 300 => "2xx",
        >= 300 and < 400 => "3xx",
        >= 400 and < 500 => "4xx",
        _ => "5xx",
    };

    private static string ResultOf(int replyCode) => replyCode is >= 200 and < 400 ? "accepted" : "rejected";
}
