// SlaTracker: per virtual queue, how long mail takes from arrival to final delivery over a sliding window
// (p50/p95/p99), how often the schedule's `sla` target was missed, and a warning when p95 drifts past it.
using System.Collections.Frozen;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Config.Settings;

namespace Relay.Admin.Metrics;

public sealed record LatencyPercentiles(double P50, double P95, double P99, int Samples);

public sealed class SlaTracker
{
    private readonly TimeProvider _clock;
    private readonly ILogger _log;
    private readonly AdminOptions _options;
    private readonly Dictionary<string, QueueWindow> _windows = new(StringComparer.Ordinal);
    private readonly Lock _windowsGate = new();
    private volatile FrozenDictionary<string, TimeSpan> _targets = FrozenDictionary<string, TimeSpan>.Empty;

    public SlaTracker(TimeProvider clock, AdminOptions? options = null, ILogger? logger = null)
    {
        _clock = clock;
        _options = options ?? new AdminOptions();
        _log = logger ?? NullLogger.Instance;
    }

    /// <summary>
    /// The target per virtual queue. A schedule carries the <c>sla</c>; several schedules can feed one queue, and
    /// the queue is held to the strictest of them.
    /// </summary>
    public static IReadOnlyDictionary<string, TimeSpan> TargetsFrom(QueueSettings settings) => TargetsFrom(settings.Schedules.Values);

    public static IReadOnlyDictionary<string, TimeSpan> TargetsFrom(IEnumerable<ScheduleSettings> schedules) =>
        schedules.Where(s => s.Sla is not null)
            .GroupBy(s => s.QueueName, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Min(s => s.Sla!.Value), StringComparer.Ordinal);

    /// <summary>Replaces the targets (at start and after a reload). Samples and counters are kept.</summary>
    public void SetTargets(IReadOnlyDictionary<string, TimeSpan> targets) =>
        _targets = targets.ToFrozenDictionary(StringComparer.Ordinal);

    public TimeSpan? TargetOf(string queue) => _targets.TryGetValue(queue, out var t) ? t : null;

    /// <summary>A recipient of <paramref name="queue"/> reached a final state <paramref name="latency"/> after arrival.</summary>
    /// <param name="delivered">False for expired recipients: they count against the target but are not a delivery time.</param>
    public void Record(string queue, TimeSpan latency, bool delivered = true)
    {
        var window = WindowOf(queue);
        var now = _clock.GetUtcNow();
        var target = TargetOf(queue);
        if (target is { } t && latency > t) Interlocked.Increment(ref window.Violations);
        if (!delivered) return;
        LatencyPercentiles? evaluated = null;
        lock (window)
        {
            window.Add(now.UtcTicks, latency.TotalSeconds, _options.SlaMaxSamples);
            if (target is not null && now.UtcTicks - window.LastEvaluated >= _options.SlaEvaluateInterval.Ticks)
            {
                window.LastEvaluated = now.UtcTicks;
                evaluated = window.Percentiles(now.UtcTicks - _options.SlaWindow.Ticks);
            }
        }
        if (evaluated is { } p && target is { } goal && p.P95 > goal.TotalSeconds
            && now.UtcTicks - Interlocked.Read(ref window.LastWarned) >= _options.SlaWarnInterval.Ticks)
        {
            Interlocked.Exchange(ref window.LastWarned, now.UtcTicks);
            _log.SlaExceeded(queue, p.P95, goal.TotalSeconds, p.Samples, _options.SlaWindow);
        }
    }

    /// <summary>Percentiles over the window ending now; null when the window holds no delivery.</summary>
    public LatencyPercentiles? Percentiles(string queue)
    {
        QueueWindow? window;
        lock (_windowsGate) _windows.TryGetValue(queue, out window);
        if (window is null) return null;
        lock (window) return window.Percentiles(_clock.GetUtcNow().UtcTicks - _options.SlaWindow.Ticks);
    }

    /// <summary>Recipients of <paramref name="queue"/> that reached their final state later than the target.</summary>
    public long Violations(string queue)
    {
        lock (_windowsGate) return _windows.TryGetValue(queue, out var w) ? Interlocked.Read(ref w.Violations) : 0;
    }

    public IReadOnlyList<string> Queues
    {
        get { lock (_windowsGate) return _windows.Keys.Order(StringComparer.Ordinal).ToList(); }
    }

    private QueueWindow WindowOf(string queue)
    {
        lock (_windowsGate)
        {
            if (!_windows.TryGetValue(queue, out var w)) _windows[queue] = w = new QueueWindow();
            return w;
        }
    }

    /// <summary>A ring of (time, latency) samples, oldest overwritten first.</summary>
    private sealed class QueueWindow
    {
        private long[] _at = new long[64];
        private double[] _seconds = new double[64];
        private int _start;
        private int _count;
        public long Violations;
        public long LastEvaluated = long.MinValue / 2;
        public long LastWarned = long.MinValue / 2;

        public void Add(long atTicks, double seconds, int max)
        {
            if (_count == _at.Length && _at.Length < max) Grow(Math.Min(max, _at.Length * 2));
            var i = (_start + _count) % _at.Length;
            if (_count == _at.Length) _start = (_start + 1) % _at.Length;   // full: drop the oldest
            else _count++;
            _at[i] = atTicks;
            _seconds[i] = seconds;
        }

        public LatencyPercentiles? Percentiles(long sinceTicks)
        {
            while (_count > 0 && _at[_start] < sinceTicks)   // samples leave the window as time passes
            {
                _start = (_start + 1) % _at.Length;
                _count--;
            }
            if (_count == 0) return null;
            var values = new double[_count];
            for (var k = 0; k < _count; k++) values[k] = _seconds[(_start + k) % _at.Length];
            Array.Sort(values);
            return new LatencyPercentiles(Rank(values, 0.50), Rank(values, 0.95), Rank(values, 0.99), values.Length);
        }

        /// <summary>Nearest-rank percentile: the smallest sample with at least p of the samples at or below it.</summary>
        private static double Rank(double[] sorted, double p) =>
            sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

        private void Grow(int size)
        {
            var at = new long[size];
            var seconds = new double[size];
            for (var k = 0; k < _count; k++)
            {
                at[k] = _at[(_start + k) % _at.Length];
                seconds[k] = _seconds[(_start + k) % _at.Length];
            }
            _at = at;
            _seconds = seconds;
            _start = 0;
        }
    }
}
