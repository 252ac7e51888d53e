// IQueueControl: the operator's commands on one message (retry now, cancel). The admin API calls this; the
// scheduler should implement it natively (README "What the scheduler should add"); SpoolQueueControl does it
// with what the spool and scheduler offer today.
namespace Relay.Admin;

public enum ControlOutcome { Done, NotFound, NothingToDo }

/// <param name="Recipients">How many recipients the command touched.</param>
/// <param name="RequeuedAs">For a dead letter put back in the queue: the id of the new message.</param>
public sealed record ControlResult(ControlOutcome Outcome, int Recipients, string? RequeuedAs = null, string? Detail = null);

public interface IQueueControl
{
    /// <summary>
    /// Pending recipients become due now. A dead letter (every recipient final, some failed or expired) is queued
    /// again: its failed and expired recipients start over with their schedules, as with <c>postsuper -r</c>.
    /// </summary>
    Task<ControlResult> RetryAsync(string messageId, CancellationToken cancellationToken);

    /// <summary>
    /// Removes the message from the queue (<c>postsuper -d</c>). With <paramref name="bounce"/>, its pending
    /// recipients fail first and the sender gets a failure DSN for them.
    /// </summary>
    Task<ControlResult> CancelAsync(string messageId, bool bounce, CancellationToken cancellationToken);
}
