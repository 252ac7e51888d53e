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

    // The mailbox whose Address holds the client's ORCPT address while MailKit builds the ORCPT parameter (one at a
    // time: every lend gives the previous one back first), and its own address.
    private (MailboxAddress Mailbox, string Own)? _lent;

    /// <summary>
    /// MailKit 4.18.2 builds ORCPT from the RCPT mailbox's own address (private, non-virtual), right after it asks
    /// <see cref="SmtpClient"/>'s GetDeliveryStatusNotifications. So that hook lends the mailbox the original
    /// recipient's address until the reply comes (RFC 3461 §4.2: an ORCPT received MUST be passed on unchanged).
    /// TransactionTests pins this order: a MailKit upgrade that changes it fails there.
    /// </summary>
    /// <returns>False when MimeKit would not write <paramref name="original"/> back exactly (it normalises: comments,
    /// IDN A-labels decoded for an SMTPUTF8 server, unparsable text); the mailbox is then left as it was.</returns>
    public bool LendOriginalAddress(MailboxAddress mailbox, string original)
    {
        RestoreAddresses();
        var own = mailbox.Address;
        try { mailbox.Address = original; }
        catch (ParseException) { return false; }
        if (!WritesBack(mailbox, original))
        {
            mailbox.Address = own;
            return false;
        }
        _lent = (mailbox, own);
        return true;
    }

    /// <summary>Whether MailKit writes <paramref name="address"/> for this mailbox, with or without SMTPUTF8.</summary>
    public static bool WritesBack(MailboxAddress mailbox, string address) =>
        string.Equals(mailbox.GetAddress(idnEncode: true), address, StringComparison.Ordinal)
        && string.Equals(mailbox.GetAddress(idnEncode: false), address, StringComparison.Ordinal);

    /// <summary>Gives a lent mailbox its own address back (after its reply, and whatever happens to the send).</summary>
    public void RestoreAddresses()
    {
        if (_lent is not { } lent) return;
        lent.Mailbox.Address = lent.Own;
        _lent = null;
    }

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

    /// <summary>
    /// NOTIFY as received (MailKit asks only when the server advertises DSN); the client's ORCPT address is lent to
    /// the mailbox so that MailKit writes it as the ORCPT. MailKit writes ORCPT only next to NOTIFY: a client ORCPT
    /// without NOTIFY gets NOTIFY=FAILURE,DELAY, one of the two readings RFC 3461 §4.1 allows a receiver for a
    /// missing NOTIFY and the one Relay itself applies, but only when the ORCPT can go out exactly as received.
    /// </summary>
    protected override DeliveryStatusNotification? GetDeliveryStatusNotifications(MimeMessage message, MailboxAddress mailbox)
    {
        var entry = Tx.EntryOf(mailbox);
        var notify = Notification(entry.Notify);
        Tx.RestoreAddresses();
        if (OriginalAddress(entry.OriginalRecipient) is { } original)
        {
            if (SmtpTransaction.WritesBack(mailbox, original) || Tx.LendOriginalAddress(mailbox, original))
                notify ??= DeliveryStatusNotification.Failure | DeliveryStatusNotification.Delay;
        }
        return notify;
    }

    private static DeliveryStatusNotification? Notification(DsnNotify notify)
    {
        if (notify == DsnNotify.Default) return null;
        if (notify.HasFlag(DsnNotify.Never)) return DeliveryStatusNotification.Never;
        DeliveryStatusNotification result = 0;
        if (notify.HasFlag(DsnNotify.Success)) result |= DeliveryStatusNotification.Success;
        if (notify.HasFlag(DsnNotify.Failure)) result |= DeliveryStatusNotification.Failure;
        if (notify.HasFlag(DsnNotify.Delay)) result |= DeliveryStatusNotification.Delay;
        return result;
    }

    /// <summary>The address of an <c>rfc822;</c> ORCPT (the only type MailKit can write); null for none or another type.</summary>
    private static string? OriginalAddress(string? orcpt)
    {
        const string Rfc822 = "rfc822;";
        if (orcpt is null || !orcpt.StartsWith(Rfc822, StringComparison.OrdinalIgnoreCase)) return null;
        var address = orcpt[Rfc822.Length..];
        return address.Length == 0 ? null : address;
    }

    protected override void OnSenderAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response) =>
        Tx.SenderAccepted = true;

    protected override void OnRecipientAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response)
    {
        Tx.RestoreAddresses();
        Tx.RcptReplies[mailbox] = response;
    }

    /// <summary>Record and go on: one refused recipient must not fail the others.</summary>
    protected override void OnRecipientNotAccepted(MimeMessage message, MailboxAddress mailbox, SmtpResponse response)
    {
        Tx.RestoreAddresses();
        Tx.RcptReplies[mailbox] = response;
    }

    public override async Task<string> SendAsync(FormatOptions options, MimeMessage message, MailboxAddress sender,
                                                 IEnumerable<MailboxAddress> recipients, CancellationToken cancellationToken = default,
                                                 ITransferProgress? progress = null)
    {
        try { return await base.SendAsync(options, message, sender, recipients, cancellationToken, progress); }
        finally { Current?.RestoreAddresses(); }   // a dropped connection skips the reply callbacks
    }

    protected override void OnNoRecipientsAccepted(MimeMessage message) => throw new NoRecipientsAcceptedException();

    /// <summary>Relay the bytes as spooled: never re-encode (DKIM signatures must still verify).</summary>
    protected override void Prepare(FormatOptions options, MimeMessage message, EncodingConstraint constraint, int maxLineLength) { }

    protected override long GetSize(FormatOptions options, MimeMessage message, CancellationToken cancellationToken) => Tx.Size;

    protected override Task<long> GetSizeAsync(FormatOptions options, MimeMessage message, CancellationToken cancellationToken) =>
        Task.FromResult(Tx.Size);
}
