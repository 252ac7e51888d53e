// EHLO / HELO: greet, reset any transaction, advertise what this connection may use.
using System.Globalization;
using Relay.Inbound.Protocol;

namespace Relay.Inbound.Session;

internal sealed partial class SmtpSession
{
    private async ValueTask<SmtpReply?> HandleHeloAsync(string argument, bool extended)
    {
        if (argument.Length == 0)
        {
            return SmtpReplies.HeloArgumentRequired;
        }

        // RFC 5321 §4.1.4: EHLO/HELO also resets the mail transaction.
        await ResetTransactionAsync();
        _helo = argument;
        _esmtp = extended;
        _state = SessionState.Greeted;
        if (!extended)
        {
            return SmtpReplies.HeloOk(Hostname, argument);
        }

        var lines = new List<string>
        {
            $"{Hostname} Hello {argument} [{_remoteIp}]",
            "PIPELINING",
            "SIZE " + Limits.MaxMessageSize.ToString(CultureInfo.InvariantCulture),
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "CHUNKING",
            "MT-PRIORITY",
        };
        if (_listener.Certificate is not null && Tls is null)
        {
            lines.Add("STARTTLS");
        }

        if (AuthAllowedHere)
        {
            lines.Add("AUTH PLAIN LOGIN");
        }

        lines.Add("HELP");
        for (var i = 0; i < lines.Count; i++)
        {
            WriteLine((i == lines.Count - 1 ? "250 " : "250-") + lines[i]);
        }

        return null;
    }
}
