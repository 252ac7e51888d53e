// Transaction: the state of one mail transaction, from MAIL FROM to the end of DATA or BDAT LAST.
using Relay.Inbound.Content;
using Relay.Inbound.Protocol;
using Relay.Spool;

namespace Relay.Inbound.Session;

internal sealed record AcceptedRecipient(string Address, DsnNotify Notify, string? OriginalRecipient);

internal sealed class Transaction(MailFromCommand mail, int? honouredMtPriority)
{
    public MailFromCommand Mail { get; } = mail;

    /// <summary>MT-PRIORITY when the client may set it, else null.</summary>
    public int? HonouredMtPriority { get; } = honouredMtPriority;

    public string Sender => Mail.Sender?.Address ?? "";

    public List<AcceptedRecipient> Recipients { get; } = [];

    /// <summary>The spool message being written (set at DATA or the first BDAT).</summary>
    public IIncomingMessage? Message { get; set; }

    public IncomingMessageWriter? Writer { get; set; }

    public DateTimeOffset StartedAt { get; set; }

    /// <summary>Priority known at RCPT time: headers are not there yet.</summary>
    public int RcptPriority(int defaultPriority) => HonouredMtPriority ?? defaultPriority;
}
