// SmtpReplies: every reply the inbound server can send, in one place, each with its RFC 3463 code.
// RFC 2034 §3: enhanced codes go on every reply except the greeting and the HELO/EHLO answers.
namespace Relay.Inbound;

/// <summary>One SMTP reply line: basic code, RFC 3463 enhanced code and text.</summary>
public readonly record struct SmtpReply(int Code, string Enhanced, string Text)
{
    public bool IsError => Code >= 400;

    public override string ToString() => Enhanced.Length == 0 ? $"{Code} {Text}" : $"{Code} {Enhanced} {Text}";
}

/// <summary>The reply catalog. Tests assert against these values, not against literals.</summary>
public static class SmtpReplies
{
    // 2xx
    public static readonly SmtpReply Ok = new(250, "2.0.0", "Ok");
    public static readonly SmtpReply SenderOk = new(250, "2.1.0", "Sender ok");
    public static readonly SmtpReply RecipientOk = new(250, "2.1.5", "Recipient ok");
    public static readonly SmtpReply ResetOk = new(250, "2.0.0", "Reset ok");
    public static readonly SmtpReply Vrfy = new(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
    public static readonly SmtpReply Help = new(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH");
    public static readonly SmtpReply AuthOk = new(235, "2.7.0", "Authentication successful");
    public static readonly SmtpReply StartData = new(354, "", "End data with <CR><LF>.<CR><LF>");
    public static readonly SmtpReply ReadyToStartTls = new(220, "2.0.0", "Ready to start TLS");

    public static SmtpReply Greeting(string hostname) => new(220, "", $"{hostname} ESMTP Relay");
    public static SmtpReply HeloOk(string hostname, string helo) => new(250, "", $"{hostname} Hello {helo}");
    public static SmtpReply Bye(string hostname) => new(221, "2.0.0", $"{hostname} closing connection");
    public static SmtpReply Queued(string id) => new(250, "2.0.0", $"Ok: queued as {id}");
    public static SmtpReply ChunkOk(long octets) => new(250, "2.0.0", $"{octets} octets received");
    public static SmtpReply AuthChallenge(string base64) => new(334, "", base64);

    // 4xx
    public static SmtpReply IdleTimeout(string hostname) => new(421, "4.4.2", $"{hostname} Error: timeout exceeded");
    public static SmtpReply TooManyConnections(string hostname) => new(421, "4.7.0", $"{hostname} Too many connections, try again later");
    public static SmtpReply TooManyErrors(string hostname) => new(421, "4.7.0", $"{hostname} Too many errors, closing connection");
    public static SmtpReply ShuttingDown(string hostname) => new(421, "4.3.2", $"{hostname} Service shutting down, closing connection");
    public static readonly SmtpReply TooManyRecipients = new(452, "4.5.3", "Too many recipients");
    public static readonly SmtpReply QueueFull = new(452, "4.3.1", "Insufficient system storage, try again later");
    public static readonly SmtpReply SpoolFailed = new(452, "4.3.1", "Could not store the message, try again later");
    public static readonly SmtpReply LocalError = new(451, "4.3.0", "Local error in processing, try again later");
    public static readonly SmtpReply TlsNotAvailable = new(454, "4.7.0", "TLS not available");

    // 5xx: protocol
    public static readonly SmtpReply UnknownCommand = new(500, "5.5.1", "Command unrecognized");
    public static readonly SmtpReply LineTooLong = new(500, "5.5.2", "Line too long");
    public static readonly SmtpReply BareLineEndingInCommand = new(500, "5.5.2", "Command lines must end with <CR><LF>");
    public static readonly SmtpReply NulInCommand = new(500, "5.5.2", "NUL or bare CR in command");
    public static readonly SmtpReply SyntaxError = new(501, "5.5.4", "Syntax error in parameters or arguments");
    public static readonly SmtpReply HeloArgumentRequired = new(501, "5.5.4", "Syntax: EHLO hostname");
    public static readonly SmtpReply BadMailSyntax = new(501, "5.1.7", "Bad sender address syntax");
    public static readonly SmtpReply BadRcptSyntax = new(501, "5.1.3", "Bad recipient address syntax");
    public static readonly SmtpReply NonAsciiAddress = new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
    public static readonly SmtpReply BadParameterValue = new(501, "5.5.4", "Invalid parameter value");
    public static readonly SmtpReply DuplicateParameter = new(501, "5.5.4", "Duplicate parameter");
    public static readonly SmtpReply BadPriority = new(501, "5.5.4", "MT-PRIORITY must be an integer from -9 to 9");
    public static readonly SmtpReply UnknownParameter = new(555, "5.5.4", "Unsupported MAIL/RCPT parameter");
    public static readonly SmtpReply NotImplemented = new(502, "5.5.1", "Command not implemented");

    // 5xx: sequence (RFC 5321 §4.2.4: 503 for commands out of order, never 501)
    public static readonly SmtpReply EhloFirst = new(503, "5.5.1", "Send EHLO/HELO first");
    public static readonly SmtpReply NestedMail = new(503, "5.5.1", "Sender already specified");
    public static readonly SmtpReply MailFirst = new(503, "5.5.1", "Need MAIL before RCPT");
    public static readonly SmtpReply RcptFirst = new(503, "5.5.1", "Need RCPT before DATA");
    public static readonly SmtpReply NoValidRecipients = new(554, "5.5.1", "No valid recipients");
    public static readonly SmtpReply DataAfterBdat = new(503, "5.5.1", "DATA not allowed after BDAT");
    public static readonly SmtpReply AlreadyTls = new(503, "5.5.1", "TLS already active");
    public static readonly SmtpReply AlreadyAuthenticated = new(503, "5.5.1", "Already authenticated");
    public static readonly SmtpReply AuthInTransaction = new(503, "5.5.1", "AUTH not allowed during a mail transaction");
    public static readonly SmtpReply AuthNotEnabled = new(503, "5.5.1", "Authentication not enabled");
    public static readonly SmtpReply BdatAfterError = new(503, "5.5.1", "No transaction in progress (send MAIL and RCPT again)");

    // 5xx: policy
    public static readonly SmtpReply RelayDenied = new(554, "5.7.1", "Relay access denied");
    public static readonly SmtpReply AuthRequired = new(530, "5.7.0", "Authentication required");
    public static readonly SmtpReply EncryptionRequired = new(538, "5.7.11", "Encryption required for requested authentication mechanism");
    public static readonly SmtpReply AuthFailed = new(535, "5.7.8", "Authentication credentials invalid");
    public static readonly SmtpReply AuthCancelled = new(501, "5.0.0", "Authentication cancelled");
    public static readonly SmtpReply AuthBadBase64 = new(501, "5.5.2", "Cannot decode response");
    public static readonly SmtpReply AuthMechanismUnknown = new(504, "5.5.4", "Unrecognized authentication mechanism");

    // 5xx: message content
    public static readonly SmtpReply TooBig = new(552, "5.3.4", "Message too big for system");
    public static readonly SmtpReply HeaderTooBig = new(552, "5.3.4", "Header section too big");
    public static readonly SmtpReply MailLoop = new(554, "5.4.6", "Too many Received: headers, mail loop detected");
    public static readonly SmtpReply BareLineEndingInData = new(554, "5.6.0", "Message contains a bare CR or LF (RFC 5321 2.3.8)");
    public static readonly SmtpReply NulInData = new(554, "5.6.0", "Message contains NUL octets");
    public static readonly SmtpReply TextLineTooLong = new(554, "5.6.0", "Message has a line longer than 1000 octets (RFC 5321 4.5.3.1.6)");
}
