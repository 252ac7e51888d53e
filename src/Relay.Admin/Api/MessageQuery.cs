// MessageQuery: the filtered, paged walk behind GET /api/messages, and the views of one message. The spool
// keeps the state in memory; the envelope (sender, addresses) is read from disk only for messages on the page.
using Relay.Admin.Observation;
using Relay.Spool;

namespace Relay.Admin.Api;

/// <param name="Status">pending | failed | delivered (the message's status) or expired (any recipient expired).</param>
/// <param name="Sender">An address (case-insensitive), or a bare domain to match every sender in it.</param>
public sealed record MessageFilter(string? Queue, string? Domain, string? Sender, string? Status)
{
    public static readonly IReadOnlyList<string> Statuses = ["pending", "failed", "delivered", "expired"];

    internal bool MatchesState(QueuedMessage m)
    {
        if (Queue is { Length: > 0 } q && !m.Recipients.Any(r => r.Queue == q)) return false;
        if (Domain is { Length: > 0 } d && !m.Recipients.Any(r => string.Equals(r.Domain, d, StringComparison.OrdinalIgnoreCase))) return false;
        return Status switch
        {
            null or "" => true,
            "expired" => m.Recipients.Any(r => r.Status == RecipientStatus.Expired),
            var s => MessageQuery.StatusOf(m) == s,
        };
    }

    internal bool MatchesEnvelope(MessageEnvelope e)
    {
        if (Sender is not { Length: > 0 } s) return true;
        if (s.Contains('@')) return string.Equals(e.Sender, s, StringComparison.OrdinalIgnoreCase);
        var at = e.Sender.LastIndexOf('@');
        return at >= 0 && string.Equals(e.Sender[(at + 1)..], s, StringComparison.OrdinalIgnoreCase);
    }
}

public sealed class MessageQuery(ISpoolStore spool, AdminOptions options)
{
    private const int ScanPage = 500;

    /// <summary>Up to <paramref name="limit"/> matching messages after <paramref name="cursor"/> (a message id), oldest first.</summary>
    public async Task<MessagesResponse> ListAsync(MessageFilter filter, int limit, string? cursor, CancellationToken cancellationToken)
    {
        var result = new List<MessageView>(Math.Min(limit, 256));
        var after = cursor;
        while (true)
        {
            var page = spool.List(after, ScanPage);
            foreach (var m in page)
            {
                after = m.Id;
                if (!filter.MatchesState(m)) continue;
                var envelope = await TryEnvelopeAsync(m.Id, cancellationToken);
                if (envelope is null || !filter.MatchesEnvelope(envelope)) continue;
                result.Add(ViewOf(m, envelope));
                if (result.Count == limit) return new MessagesResponse(result, m.Id);
            }
            if (page.Count < ScanPage) return new MessagesResponse(result, null);
        }
    }

    public async Task<MessageDetail?> DetailAsync(string id, DeliveryHistory history, CancellationToken cancellationToken)
    {
        if (spool.Find(id)?.Snapshot() is not { } m) return null;
        var envelope = await TryEnvelopeAsync(id, cancellationToken);
        if (envelope is null) return null;
        var v = ViewOf(m, envelope);
        var (attempts, dsns) = history.Of(id);
        return new MessageDetail(
            v.Id, v.Sender, v.Size, v.Priority, v.ArrivedAt, v.Status, v.Source, v.FinalizedAt, v.RetainedUntil, v.Reason, v.Recipients,
            envelope.EnvelopeId, envelope.RemoteIp, envelope.HeloName, envelope.AuthenticatedAs,
            attempts.Select(a => new AttemptView(ApiJson.Utc(a.At), a.Recipient, a.Queue, a.Attempt, a.Result, a.Code, a.Status, a.Text, a.RemoteHost)).ToList(),
            dsns.Select(d => new DsnView(ApiJson.Utc(d.At), d.Kind, d.Recipients)).ToList());
    }

    internal static string StatusOf(QueuedMessage m) =>
        m.Recipients.Any(r => r.Status == RecipientStatus.Pending) ? "pending"
        : m.Recipients.Any(r => r.Status is RecipientStatus.Failed or RecipientStatus.Expired) ? "failed"
        : "delivered";

    private MessageView ViewOf(QueuedMessage m, MessageEnvelope e)
    {
        var recipients = m.Recipients.Select((r, i) => new RecipientView(
            i < e.Recipients.Count ? e.Recipients[i].Address : "",
            r.Status.ToString().ToLowerInvariant(), r.Schedule, r.Queue, r.Attempts,
            ApiJson.Utc(r.NextAttemptAt), ErrorText(r.LastError), r.LastError?.RemoteHost)).ToList();
        var status = StatusOf(m);
        var reason = status == "failed"
            ? m.Recipients.Where(r => r.Status is RecipientStatus.Failed or RecipientStatus.Expired)
                .Select(r => r.Status == RecipientStatus.Expired && r.LastError is null ? "4.4.7 expired" : ErrorText(r.LastError))
                .FirstOrDefault(t => t is not null)
            : null;
        // The envelope's arrival: the spool's ArrivedAt is when the queue time started (the end of a hold, a requeue).
        return new MessageView(m.Id, e.Sender, e.Size, m.Priority, ApiJson.Utc(e.ArrivedAt), status, e.Source,
            ApiJson.Utc(m.FinalizedAt), ApiJson.Utc(m.FinalizedAt + options.Retention), reason, recipients);
    }

    public static string? ErrorText(DeliveryError? error) => error is null ? null
        : error.Code > 0 ? $"{error.Code} {error.EnhancedStatus} {error.Text}" : $"{error.EnhancedStatus} {error.Text}";

    // A read for display never quarantines (a transient I/O error must not move queued mail aside): an
    // unreadable or vanished entry is simply left out; delivery's own read decides about quarantine.
    private ValueTask<MessageEnvelope?> TryEnvelopeAsync(string id, CancellationToken cancellationToken) =>
        spool.TryReadEnvelopeAsync(id, cancellationToken);
}
