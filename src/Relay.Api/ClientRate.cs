// ClientRate: one API client's "count/window" rate as a GCRA (generic cell rate algorithm): a burst of up to
// `count` messages goes at once, after that one message per window/count. Under "hold" every message gets the
// next free slot as its not-before time (it is queued now and released then); under "reject" a message with no
// free slot now is refused. Slots live in memory: after a restart a client's rate starts afresh, while the
// messages already held keep their not-before times in their envelopes.
using Relay.Config.Settings;

namespace Relay.Api;

internal sealed class ClientRate(ApiRate rate)
{
    private readonly object _gate = new();
    private readonly long _interval = rate.Interval.Ticks;
    private readonly long _tolerance = (rate.Window - rate.Interval).Ticks;
    private long _theoreticalArrival;   // ticks; the GCRA's TAT

    /// <summary>Takes the next slot: null when the message may go now, else the time it may go.</summary>
    public DateTimeOffset? Hold(DateTimeOffset now)
    {
        lock (_gate)
        {
            var tat = Math.Max(_theoreticalArrival, now.UtcTicks);
            var allowedAt = tat - _tolerance;
            _theoreticalArrival = tat + _interval;
            return allowedAt <= now.UtcTicks ? null : new DateTimeOffset(allowedAt, TimeSpan.Zero);
        }
    }

    /// <summary>Whether a slot is free now, without taking it (a cheap early refusal before any work).</summary>
    public bool IsFree(DateTimeOffset now, out TimeSpan retryAfter)
    {
        lock (_gate)
        {
            var allowedAt = Math.Max(_theoreticalArrival, now.UtcTicks) - _tolerance;
            retryAfter = allowedAt > now.UtcTicks ? TimeSpan.FromTicks(allowedAt - now.UtcTicks) : TimeSpan.Zero;
            return retryAfter == TimeSpan.Zero;
        }
    }

    /// <summary>Whether the whole burst is available again (forgetting this state would change nothing).</summary>
    public bool IsIdle(DateTimeOffset now)
    {
        lock (_gate) return _theoreticalArrival <= now.UtcTicks;
    }

    /// <summary>Takes a slot only if one is free now; otherwise says how long until one is.</summary>
    public bool TryTake(DateTimeOffset now, out TimeSpan retryAfter)
    {
        lock (_gate)
        {
            var tat = Math.Max(_theoreticalArrival, now.UtcTicks);
            var allowedAt = tat - _tolerance;
            if (allowedAt > now.UtcTicks)
            {
                retryAfter = TimeSpan.FromTicks(allowedAt - now.UtcTicks);
                return false;
            }
            _theoreticalArrival = tat + _interval;
            retryAfter = TimeSpan.Zero;
            return true;
        }
    }
}
