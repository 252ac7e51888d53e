// RelaySmtpClient: MailKit's SmtpClient extended through its protected virtual hooks, once, at the edge
// (STYLE.md §8.9). One instance is one pooled connection; each transaction sets Current first.
using MailKit;
using MailKit.Net.Smtp;
using MimeKit;
using Relay.Spool;

namespace Relay.Delivery;

/// <summary>What one MAIL/RCPT/DATA transaction needs from the envelope, and what the server said per recipient.</summary>
internal sealed class SmtpTransaction(MessageEnvelope envelope, IReadOnlyList<(MailboxAddress Mailbox, RecipientEntry Entry)> recipients, long size)
{
    public MessageEnvelope Envelope { get; } = envelope;
    public IReadOnlyList<(MailboxAddress Mailbox, RecipientEntry Entry)> Recipients { get; } = recipients;
    public long Size { get; } = size;

    /// <summary>RCPT replies by mailbox (reference identity: one MailboxAddress per recipient entry).</summary>
    public Dictionary<MailboxAddress, SmtpResponse> RcptReplies { get; } = new(ReferenceEqualityComparer.Instance);

    public bool SenderAccepted { get; set; }

    public RecipientEntry EntryOf(MailboxAddress mailbox)
    {
        foreach (var (m, e) in Recipients)
            if (ReferenceEquals(m, mailbox)) return e;
        throw new InvalidOperationException("MailKit asked about a recipient that is not in the transaction");
    }
}

/// <summary>
/// Thrown from <see cref="SmtpClient.OnNoRecipientsAccepted"/>: every RCPT was refused and each reply is recorded.
/// An <see cref="SmtpCommandException"/> so that MailKit sends RSET and keeps the connection for the next message.
/// </summary>
internal sealed class NoRecipientsAcceptedException()
    : SmtpCommandException(SmtpErrorCode.RecipientNotAccepted, SmtpStatusCode.MailboxUnavailable, "no recipients were accepted");

internal sealed class RelaySmtpClient : SmtpClient
{
    public SmtpTransaction? Current { get; set; }

    private SmtpTransaction Tx => Current ?? throw new InvalidOperationException("no transaction");

    protected override string? GetEnvelopeId(MimeMessage message) => Tx.Envelope.EnvelopeId;

    /// <summary>NOTIFY as received; none when the client gave none (MailKit only sends NOTIFY/ORCPT when DSN is advertised).</summary>
    protected override DeliveryStatusNotification? GetDeliveryStatusNotifications(MimeMessage message, MailboxAddress mailbox)
    {
        var notify = Tx.EntryOf(mailbox).Notify;
        if (notify == DsnNotify.Default) return null;
        if (notify.HasFlag(DsnNotify.Never)) return DeliveryStatusNotification.Never;
        DeliveryStatusNotification result = 0;
        if (notify.HasFlag(DsnNotify.Success)) result |= DeliveryStatusNotification.Success;
        if (notify.HasFlag(DsnNotify.Failure)) result |= DeliveryStatusNotification.Failure;
        if (notify.HasFlag(DsnNotify.Delay)) result |= DeliveryStatusNotification.Delay;
        return result;
    }

    protected override void OnSenderAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response) =>
        Tx.SenderAccepted = true;

    protected override void OnRecipientAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response) =>
        Tx.RcptReplies[mailbox] = response;

    /// <summary>Record and go on: one refused recipient must not fail the others.</summary>
    protected override void OnRecipientNotAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response) =>
        Tx.RcptReplies[mailbox] = response;

    protected override void OnNoRecipientsAccepted(MimeMessage message) => throw new NoRecipientsAcceptedException();

    /// <summary>Relay the bytes as spooled: never re-encode (DKIM signatures must still verify).</summary>
    protected override void Prepare(FormatOptions options, MimeMessage message, EncodingConstraint constraint, int maxLineLength) { }

    protected override long GetSize(FormatOptions options, MimeMessage message, CancellationToken cancellationToken) => Tx.Size;

    protected override Task<long> GetSizeAsync(FormatOptions options, MimeMessage message, CancellationToken cancellationToken) =>
        Task.FromResult(Tx.Size);
}
