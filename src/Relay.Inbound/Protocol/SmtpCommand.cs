// SmtpCommand: the typed requests the command parser produces for the session.
using Relay.Spool;

namespace Relay.Inbound.Protocol;

internal enum SmtpVerb { Unknown, Helo, Ehlo, Mail, Rcpt, Data, Bdat, Rset, Noop, Quit, Vrfy, Expn, Help, StartTls, Auth }

/// <summary>One command line split into its verb and the raw argument text.</summary>
internal readonly record struct SmtpCommand(SmtpVerb Verb, string Argument);

/// <summary>
/// An RFC 5321 mailbox from a path. The source route, if any, is dropped (§4.1.1.3 lets us
/// ignore it) but remembered, because relay control treats it as a non-local address.
/// </summary>
internal sealed record SmtpPath(string LocalPart, string Domain, bool QuotedLocalPart, bool HasSourceRoute)
{
    public string Address => $"{LocalPart}@{Domain}";

    public bool IsAscii => System.Text.Ascii.IsValid(LocalPart) && System.Text.Ascii.IsValid(Domain);

    /// <summary>Address tricks that must never turn a local address into a relayed one (% hack, bang path, quoting, routes).</summary>
    public bool HasRoutingTricks =>
        HasSourceRoute || QuotedLocalPart || LocalPart.Contains('%') || LocalPart.Contains('!');
}

/// <summary>MAIL FROM with its RFC 1870/6152/6531/3461/6710 parameters.</summary>
internal sealed record MailFromCommand(
    SmtpPath? Sender,
    long? DeclaredSize,
    BodyType Body,
    bool SmtpUtf8,
    DsnReturn Return,
    string? EnvelopeId,
    int? MtPriority);

/// <summary>RCPT TO with its RFC 3461 parameters.</summary>
internal sealed record RcptToCommand(SmtpPath Recipient, DsnNotify Notify, string? OriginalRecipient, bool IsPostmaster);

/// <summary>BDAT chunk-size [LAST] (RFC 3030).</summary>
internal readonly record struct BdatCommand(long Size, bool Last);

/// <summary>AUTH mechanism [initial-response] (RFC 4954).</summary>
internal readonly record struct AuthCommand(string Mechanism, string? InitialResponse);
