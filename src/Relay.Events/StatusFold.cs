// StatusFold: turns one message's events (in log order) into the status view. Everything but NextAttemptAt
// comes from the log, so a message that left the spool long ago still has its full status.
using Relay.Spool;

namespace Relay.Events;

internal static class StatusFold
{
    private sealed class Rcpt(StoredRecipient entry)
    {
        public readonly StoredRecipient Entry = entry;
        public string State = "queued";
        public int Attempts;
        public DateTimeOffset? LastAttemptAt;
        public DateTimeOffset? FinalAt;
        public string? LastReply;
    }

    public static MessageStatusView? Build(string id, IReadOnlyList<StoredEvent> events, ISpoolStore? spool)
    {
        var accepted = events.FirstOrDefault(e => e.Type == DeliveryEventType.Accepted);
        if (accepted is null) return null;
        var rcpts = (accepted.Rcpts ?? []).Select(r => new Rcpt(r)).ToArray();
        foreach (var e in events)
        {
            if (e.Rcpt < 0 || e.Rcpt >= rcpts.Length) continue;
            var r = rcpts[e.Rcpt];
            switch (e.Type)
            {
                case DeliveryEventType.Requeued:
                    // Queued again by the operator: its attempts count from 1 again (the spool's do too).
                    r.State = "queued";
                    r.FinalAt = null;
                    r.Attempts = 0;
                    break;
                case DeliveryEventType.Deferred when r.FinalAt is null:
                    r.State = "deferred";
                    r.Attempts = Math.Max(r.Attempts, e.Attempt);
                    r.LastAttemptAt = e.At;
                    r.LastReply = EventRecords.Reply(e) ?? r.LastReply;
                    break;
                case DeliveryEventType.Delivered or DeliveryEventType.Failed or DeliveryEventType.Expired when r.FinalAt is null:
                    r.State = e.Type;
                    // An expiry while waiting made no attempt of its own; a final attempt did.
                    if (e.Type != DeliveryEventType.Expired || e.Attempt > r.Attempts) r.LastAttemptAt = e.At;
                    r.Attempts = Math.Max(r.Attempts, e.Attempt);
                    r.LastReply = EventRecords.Reply(e) ?? r.LastReply;
                    r.FinalAt = e.At;
                    break;
            }
        }
        var live = spool?.Find(id);
        var views = new RecipientStatusView[rcpts.Length];
        for (var i = 0; i < rcpts.Length; i++)
        {
            var r = rcpts[i];
            DateTimeOffset? next = null;
            if (r.FinalAt is null && live is not null && i < live.RecipientCount)
            {
                var state = live.GetRecipient(i);
                if (!state.IsFinal) next = state.NextAttemptAt;
            }
            views[i] = new RecipientStatusView(r.Entry.Address, r.State, r.Entry.Schedule, r.Entry.Queue, r.Attempts, r.LastAttemptAt, next, r.LastReply);
        }
        DateTimeOffset? finished = rcpts.Length > 0 && rcpts.All(r => r.FinalAt is not null) ? rcpts.Max(r => r.FinalAt) : null;
        return new MessageStatusView(id, accepted.Client, accepted.Sender ?? "", accepted.Priority, accepted.At, finished,
                                     views, events.Select(e => e.ToPublic()).ToList());
    }
}
