// RecipientPolicy: the pure rules that turn an attempt's outcome into the recipient's next state: retry
// timetable, expiry by TTL or attempts, and which notify times are due. No I/O, no clock of its own.
using Relay.Config.Settings;
using Relay.Spool;

namespace Relay.Scheduler;

public static class RecipientPolicy
{
    /// <summary>RFC 3463 status of a recipient that ran out of time (DESIGN.md).</summary>
    public const string ExpiredStatus = "4.4.7";

    /// <summary>The state after attempt number <c>state.Attempts + 1</c> ended with <paramref name="outcome"/>.</summary>
    public static RecipientChange AfterAttempt(int index, RecipientState state, RecipientOutcome outcome,
                                               ScheduleSettings schedule, DateTimeOffset arrivedAt, DateTimeOffset now)
    {
        var attempts = state.Attempts + 1;
        var error = new DeliveryError(outcome.Code, outcome.EnhancedStatus, outcome.Text, outcome.RemoteHost);
        switch (outcome.Kind)
        {
            case OutcomeKind.Delivered:
                return Change(index, state, RecipientStatus.Delivered, attempts, null, state.LastError);
            case OutcomeKind.Permanent:
                return Change(index, state, RecipientStatus.Failed, attempts, null, error);
        }
        // Temporary: out of attempts fails with the last error's status; out of time with 4.4.7.
        if (schedule.Expiry is Expiry.Attempts max && attempts >= max.Max)
            return Change(index, state, RecipientStatus.Expired, attempts, null, error);
        if (ExpiresAt(schedule, arrivedAt) is { } deadline && now >= deadline)
            return Change(index, state, RecipientStatus.Expired, attempts, null, TimeExpired(schedule, error));
        return Change(index, state, RecipientStatus.Pending, attempts, now + schedule.RetryDelay(attempts), error);
    }

    /// <summary>A pending recipient whose TTL passed while it waited.</summary>
    public static RecipientChange Expire(int index, RecipientState state, ScheduleSettings schedule) =>
        Change(index, state, RecipientStatus.Expired, state.Attempts, null, TimeExpired(schedule, state.LastError));

    /// <summary>
    /// When the last attempt of a pending recipient ended, from its durable state: the next attempt minus the retry
    /// interval that <see cref="AfterAttempt"/> added. Null before the first attempt, or with no next attempt.
    /// Exact while the schedule's <c>retry</c> list is the one the attempt used (a reload may change it).
    /// </summary>
    public static DateTimeOffset? LastAttemptAt(RecipientState state, ScheduleSettings schedule) =>
        state.Attempts > 0 && state.NextAttemptAt is { } next && schedule.Retry.Count > 0 ? next - schedule.RetryDelay(state.Attempts) : null;

    public static DateTimeOffset? ExpiresAt(ScheduleSettings schedule, DateTimeOffset arrivedAt) =>
        schedule.Expiry is Expiry.Ttl ttl ? arrivedAt + ttl.After : null;

    /// <summary>Bits of notify times that passed by <paramref name="now"/> and were not sent yet.</summary>
    public static int DueNotifications(ScheduleSettings schedule, DateTimeOffset arrivedAt, int sent, DateTimeOffset now)
    {
        var due = 0;
        for (var i = 0; i < schedule.Notify.Count && i < 31; i++)
        {
            if ((sent & (1 << i)) == 0 && arrivedAt + schedule.Notify[i] <= now) due |= 1 << i;
        }
        return due;
    }

    /// <summary>The earliest notify time not sent yet, if any.</summary>
    public static DateTimeOffset? NextNotification(ScheduleSettings schedule, DateTimeOffset arrivedAt, int sent)
    {
        DateTimeOffset? next = null;
        for (var i = 0; i < schedule.Notify.Count && i < 31; i++)
        {
            if ((sent & (1 << i)) != 0) continue;
            var at = arrivedAt + schedule.Notify[i];
            if (next is null || at < next) next = at;
        }
        return next;
    }

    private static DeliveryError TimeExpired(ScheduleSettings schedule, DeliveryError? last)
    {
        var ttl = schedule.Expiry is Expiry.Ttl t ? t.After : TimeSpan.Zero;
        var text = last is null ? $"delivery time expired ({ttl})" : $"delivery time expired ({ttl}); last error: {last.Text}";
        return new DeliveryError(last?.Code ?? 0, ExpiredStatus, text, last?.RemoteHost);
    }

    private static RecipientChange Change(int index, RecipientState s, RecipientStatus status, int attempts,
                                          DateTimeOffset? next, DeliveryError? error) =>
        new(index, status, attempts, next, error, s.NotifySent, FinalReported: false);
}
