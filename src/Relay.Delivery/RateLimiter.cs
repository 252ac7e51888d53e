// RateLimiter: per-domain token buckets ("100/1m" = 100 messages a minute, bursting up to 100), against the
// injected clock. A message held by a rate is reported Temporary (deferred), never failed.
namespace Relay.Delivery;

internal sealed class RateLimiter(TimeProvider clock)
{
    private sealed class Bucket(double tokens, DateTimeOffset at)
    {
        public double Tokens = tokens;
        public DateTimeOffset At = at;
    }

    private readonly Dictionary<string, Bucket> _buckets = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Takes one message's worth of <paramref name="rate"/> for <paramref name="domain"/>; false = hold it back.</summary>
    public bool TryTake(string domain, RateLimit rate)
    {
        var now = clock.GetUtcNow();
        lock (_buckets)
        {
            if (!_buckets.TryGetValue(domain, out var bucket))
                _buckets[domain] = bucket = new Bucket(rate.Count, now);
            var elapsed = (now - bucket.At).TotalMilliseconds;
            if (elapsed > 0)
            {
                bucket.Tokens = Math.Min(rate.Count, bucket.Tokens + elapsed * rate.Count / rate.Window.TotalMilliseconds);
                bucket.At = now;
            }
            if (bucket.Tokens < 1) return false;
            bucket.Tokens -= 1;
            return true;
        }
    }
}
