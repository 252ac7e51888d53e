// VirtualQueue: one [queue.virtual.NAME] at run time: its due recipients in delivery order and its
// threads-per-node slots. Owned by the scheduler loop; nothing is shared between queues.
using Relay.Config.Settings;
// The scheduler's per-message state lives in the spool's entry (scheduler-owned fields), not in a second object.
using Job = Relay.Spool.SpooledMessage;

namespace Relay.Scheduler;

internal sealed class VirtualQueue(VirtualQueueSettings settings)
{
    private readonly PriorityQueue<ReadyItem, ReadyKey> _ready = new();
    private long _sequence;
    private int _inFlight;

    /// <summary>Replaced by a reload; a new priority-aging applies once the heap is rebuilt (<see cref="DrainTo"/>).</summary>
    public VirtualQueueSettings Settings { get; set; } = settings;
    public string Name => Settings.Name;
    public int InFlight => Volatile.Read(ref _inFlight);
    public int ReadyCount => _ready.Count;
    public bool HasSlot => _inFlight < Settings.ThreadsPerNode;

    /// <summary>
    /// Effective priority = priority + waited / priority-aging, so a recipient of priority p that became due
    /// at time d overtakes as if it had become due p aging intervals earlier: the order key is
    /// d − p·aging (smaller first), which does not change as time passes, so a plain heap stays correct.
    /// With aging 0 the order is strict: priority, then due time. Ties keep commit (FIFO) order.
    /// </summary>
    public void Enqueue(Job job, int index, int version, long dueTicks, int priority, long fifo)
    {
        var aging = Settings.PriorityAging.Ticks;
        var key = aging > 0
            ? new ReadyKey(dueTicks - priority * aging, 0, fifo, ++_sequence)
            : new ReadyKey(-priority, dueTicks, fifo, ++_sequence);
        _ready.Enqueue(new ReadyItem(job, index, version), key);
    }

    /// <summary>Moves every waiting entry out (to be enqueued again, e.g. under new settings).</summary>
    public void DrainTo(List<ReadyItem> items)
    {
        while (_ready.TryDequeue(out var item, out _)) items.Add(item);
    }

    public void Reserve(long count) => _ready.EnsureCapacity((int)Math.Min(count, Array.MaxLength));

    public bool TryDequeue(out ReadyItem item) => _ready.TryDequeue(out item, out _);

    public void SlotTaken() => Interlocked.Increment(ref _inFlight);
    public void SlotFreed() => Interlocked.Decrement(ref _inFlight);
}

internal readonly record struct ReadyItem(Job Job, int Index, int Version);

internal readonly record struct ReadyKey(long A, long B, long Fifo, long Sequence) : IComparable<ReadyKey>
{
    public int CompareTo(ReadyKey other)
    {
        var c = A.CompareTo(other.A);
        if (c != 0) return c;
        c = B.CompareTo(other.B);
        if (c != 0) return c;
        c = Fifo.CompareTo(other.Fifo);
        return c != 0 ? c : Sequence.CompareTo(other.Sequence);
    }
}
