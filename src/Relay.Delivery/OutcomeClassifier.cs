// OutcomeClassifier: the one place that turns replies, exceptions and local conditions into (kind, code,
// enhanced status, text). DESIGN.md: 2xx delivered, 5xx permanent, 4xx / timeouts / dropped connections temporary.
using System.Net.Sockets;
using System.Text.RegularExpressions;
using MailKit;
using MailKit.Net.Smtp;
using MailKit.Security;
using Relay.Scheduler;

namespace Relay.Delivery;

/// <summary>A classified result that applies to one or more recipients.</summary>
/// <param name="Text">Human text without the code and enhanced status (the scheduler prints <c>code status text</c>).</param>
internal sealed record Failure(OutcomeKind Kind, int Code, string EnhancedStatus, string Text, string? RemoteHost = null)
{
    public RecipientOutcome For(string address) => new(address, Kind, Code, EnhancedStatus, Text, RemoteHost);
    public override string ToString() => $"{Code} {EnhancedStatus} {Text}";
}

internal static partial class OutcomeClassifier
{
    public static OutcomeKind KindOf(int code) => code switch
    {
        >= 200 and < 300 => OutcomeKind.Delivered,
        >= 400 and < 500 => OutcomeKind.Temporary,
        _ => OutcomeKind.Permanent,
    };

    /// <summary>A remote reply; <paramref name="stage"/> is the command it answered, as Postfix says "(in reply to RCPT TO command)".</summary>
    public static Failure FromReply(int code, string response, string? remoteHost, string stage)
    {
        var (enhanced, text) = SplitEnhanced(code, response);
        var suffix = stage.Length == 0 ? "" : $" (in reply to {stage} command)";
        return new Failure(KindOf(code), code, enhanced, text + suffix, remoteHost);
    }

    /// <summary>Splits "5.1.1 no such user" into its RFC 3463 status and text; a missing status is derived from the code.</summary>
    public static (string Enhanced, string Text) SplitEnhanced(int code, string response)
    {
        var text = response.Replace("\r", "").Replace('\n', ' ').Trim();
        var match = EnhancedPattern().Match(text);
        if (match.Success && match.Groups[1].Value[0] == (char)('0' + code / 100))
            return (match.Groups[1].Value, text[match.Length..].Trim());
        return ($"{code / 100}.0.0", text);
    }

    /// <summary>Anything thrown while talking to one host. Unknown exceptions are temporary (never bounce on our bug).</summary>
    public static Failure FromException(Exception error, string? remoteHost, string stage) => error switch
    {
        SmtpCommandException command => FromReply((int)command.StatusCode, command.Message, remoteHost, stage),
        SmtpProtocolException => Temp(421, "4.4.2", $"lost connection with {remoteHost} while sending {stage}", remoteHost),
        SslHandshakeException => Temp(421, "4.7.5", $"TLS handshake with {remoteHost} failed: {error.Message}", remoteHost),
        ServiceNotConnectedException or IOException => Temp(421, "4.4.2", $"lost connection with {remoteHost} while sending {stage}", remoteHost),
        SocketException socket => Temp(421, "4.4.1", $"connect to {remoteHost}: {socket.SocketErrorCode}", remoteHost),
        TimeoutException or OperationCanceledException => Temp(421, "4.4.2", $"conversation with {remoteHost} timed out while sending {stage}", remoteHost),
        _ => Temp(451, "4.3.0", $"local error talking to {remoteHost}: {error.GetType().Name}: {error.Message}", remoteHost),
    };

    public static Failure Temp(int code, string enhanced, string text, string? remoteHost = null) =>
        new(OutcomeKind.Temporary, code, enhanced, text, remoteHost);

    public static Failure Perm(int code, string enhanced, string text, string? remoteHost = null) =>
        new(OutcomeKind.Permanent, code, enhanced, text, remoteHost);

    // Local conditions (no remote reply): one definition each so DSNs and logs agree.
    public static Failure NullMx(string domain) => Perm(556, "5.1.10", $"domain {domain} does not accept mail (null MX)");
    public static Failure NoSuchDomain(string domain) => Perm(550, "5.1.2", $"host or domain name not found: {domain} (NXDOMAIN)");
    public static Failure NoAddresses(string domain) => Perm(550, "5.1.2", $"no MX or address records for {domain}");
    public static Failure DnsTemporary(string name, string reason) => Temp(451, "4.4.3", $"DNS lookup of {name} failed: {reason}");
    public static Failure NeedsSmtpUtf8(string host) => Perm(550, "5.6.7", $"SMTPUTF8 is required, but was not offered by host {host}", host);
    public static Failure TooBig(string host, long size, long max) => Perm(552, "5.3.4", $"message size {size} exceeds size limit {max} of host {host}", host);
    public static Failure TlsRequired(string host) => Temp(421, "4.7.4", $"TLS is required, but was not offered by host {host}", host);
    public static Failure RateLimited(string domain, RateLimit rate) => Temp(451, "4.4.5", $"deferred by rate limit ({rate.Count} per {rate.Window}) for {domain}");
    public static Failure ConnectionLimit(string host) => Temp(451, "4.4.5", $"deferred: all {host} connections busy (max-connections-per-host)", host);
    public static Failure BadAddress(string address) => Perm(553, "5.1.3", $"bad recipient address syntax: {address}");

    [GeneratedRegex(@"^([245]\.\d{1,3}\.\d{1,3})(?=\s|$)")]
    private static partial Regex EnhancedPattern();
}
