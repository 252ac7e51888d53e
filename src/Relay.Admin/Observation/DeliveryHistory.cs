// DeliveryHistory: what happened to recent messages (each attempt, each DSN), kept in memory for
// GET /api/messages/{id}. The spool stores only the latest state per recipient, so this is the only
// place attempts are listed; it starts empty at every start and forgets the oldest messages first.
namespace Relay.Admin.Observation;

/// <summary>One delivery attempt for one recipient.</summary>
public sealed record AttemptRecord(
    DateTimeOffset At, string Recipient, string Queue, int Attempt, string Result,
    int Code, string Status, string Text, string? RemoteHost);

/// <summary>One DSN the DSN stage was asked to send. Kind: failure, delay or success.</summary>
public sealed record DsnRecord(DateTimeOffset At, string Kind, IReadOnlyList<string> Recipients);

public sealed class DeliveryHistory(AdminOptions? options = null)
{
    private readonly AdminOptions _options = options ?? new AdminOptions();
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly Queue<string> _order = new();
    private readonly Lock _gate = new();

    public void AddAttempt(string messageId, AttemptRecord attempt)
    {
        lock (_gate)
        {
            var e = EntryOf(messageId);
            e.Attempts.Add(attempt);
            if (e.Attempts.Count > _options.HistoryAttemptsPerMessage) e.Attempts.RemoveAt(0);
        }
    }

    public void AddDsn(string messageId, DsnRecord dsn)
    {
        lock (_gate) EntryOf(messageId).Dsns.Add(dsn);
    }

    public (IReadOnlyList<AttemptRecord> Attempts, IReadOnlyList<DsnRecord> Dsns) Of(string messageId)
    {
        lock (_gate)
        {
            return _entries.TryGetValue(messageId, out var e) ? (e.Attempts.ToList(), e.Dsns.ToList()) : ([], []);
        }
    }

    private Entry EntryOf(string id)
    {
        if (_entries.TryGetValue(id, out var e)) return e;
        _entries[id] = e = new Entry();
        _order.Enqueue(id);
        while (_entries.Count > _options.HistoryMessages && _order.TryDequeue(out var oldest)) _entries.Remove(oldest);
        return e;
    }

    private sealed class Entry
    {
        public List<AttemptRecord> Attempts { get; } = [];
        public List<DsnRecord> Dsns { get; } = [];
    }
}
