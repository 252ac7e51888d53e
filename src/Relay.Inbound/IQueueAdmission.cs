// IQueueAdmission: back-pressure from the queue, asked at RCPT time (DESIGN.md [queue.virtual] max-size).
namespace Relay.Inbound;

/// <summary>Whether a virtual queue can take one more recipient. A full queue makes RCPT answer 452 4.3.1.</summary>
public interface IQueueAdmission
{
    bool HasRoom(string queueName);
}

/// <summary>The default: every queue always has room.</summary>
public sealed class UnlimitedQueueAdmission : IQueueAdmission
{
    public static readonly UnlimitedQueueAdmission Instance = new();

    public bool HasRoom(string queueName) => true;
}
