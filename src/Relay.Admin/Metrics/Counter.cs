// Counter: the lock-free building blocks of RelayMetrics (a long bumped with Interlocked, labelled families
// in a ConcurrentDictionary, a fixed-bucket histogram). Readers see each value atomically, not a global snapshot.
using System.Collections.Concurrent;

namespace Relay.Admin.Metrics;

/// <summary>A monotonically increasing count.</summary>
public sealed class Counter
{
    private long _value;
    public long Value => Interlocked.Read(ref _value);
    public void Increment() => Interlocked.Increment(ref _value);
    public void Add(long n) => Interlocked.Add(ref _value, n);
}

/// <summary>A value that goes up and down.</summary>
public sealed class Gauge
{
    private long _value;
    public long Value => Interlocked.Read(ref _value);
    public void Increment() => Interlocked.Increment(ref _value);
    public void Decrement() => Interlocked.Decrement(ref _value);
    public void Set(long value) => Interlocked.Exchange(ref _value, value);
}

/// <summary>One metric name with label values: each distinct label tuple gets its own child, created once.</summary>
public sealed class Family<T>(string name, string help, string[] labelNames, Func<T> create) where T : class
{
    private readonly ConcurrentDictionary<LabelValues, T> _children = new();

    public string Name { get; } = name;
    public string Help { get; } = help;
    public IReadOnlyList<string> LabelNames { get; } = labelNames;

    public T this[params string[] values]
    {
        get
        {
            if (values.Length != LabelNames.Count) throw new ArgumentException($"{Name} takes {LabelNames.Count} label(s)");
            return _children.GetOrAdd(new LabelValues(values), static (_, c) => c(), create);
        }
    }

    public IEnumerable<(IReadOnlyList<string> Labels, T Child)> Children =>
        _children.OrderBy(c => c.Key.Joined, StringComparer.Ordinal).Select(c => ((IReadOnlyList<string>)c.Key.Values, c.Value));
}

/// <summary>Label values as a dictionary key (structural equality).</summary>
internal sealed class LabelValues(string[] values) : IEquatable<LabelValues>
{
    public string[] Values { get; } = values;
    public string Joined { get; } = string.Join('\u0001', values);
    public bool Equals(LabelValues? other) => other is not null && Joined == other.Joined;
    public override bool Equals(object? obj) => Equals(obj as LabelValues);
    public override int GetHashCode() => Joined.GetHashCode(StringComparison.Ordinal);
}

/// <summary>
/// A Prometheus histogram with fixed upper bounds. Observations bump one bucket (non-cumulative; the writer
/// accumulates), the count and the sum (kept in microseconds so it can be a long).
/// </summary>
public sealed class Histogram(double[] bounds)
{
    private readonly long[] _buckets = new long[bounds.Length + 1];   // last = +Inf
    private long _count;
    private long _sumMicros;

    public IReadOnlyList<double> Bounds { get; } = bounds;
    public long Count => Interlocked.Read(ref _count);
    public double Sum => Interlocked.Read(ref _sumMicros) / 1_000_000d;

    public void Observe(double value)
    {
        var i = Array.BinarySearch(bounds, value);
        if (i < 0) i = ~i;   // first bound >= value (le semantics)
        Interlocked.Increment(ref _buckets[i]);
        Interlocked.Add(ref _sumMicros, (long)Math.Round(value * 1_000_000d));
        Interlocked.Increment(ref _count);
    }

    /// <summary>Cumulative counts per bound, then +Inf.</summary>
    public long[] CumulativeBuckets()
    {
        var result = new long[_buckets.Length];
        long running = 0;
        for (var i = 0; i < _buckets.Length; i++)
        {
            running += Interlocked.Read(ref _buckets[i]);
            result[i] = running;
        }
        return result;
    }
}
