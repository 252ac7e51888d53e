// IInboundEvents: what the SMTP listener tells the outside about its traffic (metrics), without
// depending on the admin stage.
namespace Relay.Inbound;

/// <summary>Counted events of the SMTP listener. Called on session threads: implementations must be thread-safe and cheap.</summary>
public interface IInboundEvents
{
    void SessionOpened();
    void SessionClosed();
    /// <summary>The reply code given to one RCPT.</summary>
    void RecipientAnswered(int replyCode);
    /// <summary>The reply code given at the end of DATA or BDAT LAST.</summary>
    void MessageAnswered(int replyCode);
}

/// <summary>The default: nobody listens.</summary>
public sealed class NoInboundEvents : IInboundEvents
{
    public static readonly NoInboundEvents Instance = new();
    public void SessionOpened() { }
    public void SessionClosed() { }
    public void RecipientAnswered(int replyCode) { }
    public void MessageAnswered(int replyCode) { }
}
