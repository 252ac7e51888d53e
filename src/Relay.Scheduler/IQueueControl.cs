// IQueueControl: the operator's commands on one message (retry now, cancel), as postsuper -r / -d. The admin API
// calls it; QueueScheduler implements it on its loop (QueueScheduler.Operations.cs).
namespace Relay.Scheduler;

public enum ControlOutcome { Done, NotFound, NothingToDo }

/// <param name="Recipients">How many recipients the command touched.</param>
/// <param name="RequeuedAs">For a dead letter put back in the queue: the id it is queued under (its own id).</param>
public sealed record ControlResult(ControlOutcome Outcome, int Recipients, string? RequeuedAs = null, string? Detail = null);

public interface IQueueControl
{
    /// <summary>
    /// Pending recipients become due now. A dead letter (every recipient final, some failed or expired) is queued
    /// again under its own id: its failed and expired recipients start over with their schedules (<c>postsuper -r</c>).
    /// </summary>
    Task<ControlResult> RetryAsync(string messageId, CancellationToken cancellationToken);

    /// <summary>
    /// Removes the message from the queue (<c>postsuper -d</c>). With <paramref name="bounce"/>, its pending
    /// recipients fail first and the sender gets a failure DSN for them.
    /// </summary>
    Task<ControlResult> CancelAsync(string messageId, bool bounce, CancellationToken cancellationToken);
}
