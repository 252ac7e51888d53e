// SmtpCommandParser: turns one command line into a typed request or the reply that explains why not.
// Pure functions, no I/O, no exceptions for bad input: a bad command is a value (an SmtpReply).
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using Relay.Spool;

namespace Relay.Inbound.Protocol;

internal static class SmtpCommandParser
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Splits a line (without CRLF) into verb and argument. Null when the line holds NUL or a bare CR.</summary>
    public static SmtpCommand? Parse(ReadOnlySpan<byte> line)
    {
        if (line.IndexOfAny((byte)'\0', (byte)'\r') >= 0)
        {
            return null;
        }

        string text;
        try
        {
            text = StrictUtf8.GetString(line);
        }
        catch (DecoderFallbackException)
        {
            // Not UTF-8: keep the bytes visible as Latin-1 so the verb can still be read; any
            // address in it will fail the grammar below.
            text = Encoding.Latin1.GetString(line);
        }

        var space = text.IndexOf(' ');
        var verbText = space < 0 ? text : text[..space];
        var argument = space < 0 ? "" : text[(space + 1)..].Trim(' ');
        return new SmtpCommand(VerbOf(verbText), argument);
    }

    private static SmtpVerb VerbOf(string verb) => verb.ToUpperInvariant() switch
    {
        "HELO" => SmtpVerb.Helo,
        "EHLO" => SmtpVerb.Ehlo,
        "MAIL" => SmtpVerb.Mail,
        "RCPT" => SmtpVerb.Rcpt,
        "DATA" => SmtpVerb.Data,
        "BDAT" => SmtpVerb.Bdat,
        "RSET" => SmtpVerb.Rset,
        "NOOP" => SmtpVerb.Noop,
        "QUIT" => SmtpVerb.Quit,
        "VRFY" => SmtpVerb.Vrfy,
        "EXPN" => SmtpVerb.Expn,
        "HELP" => SmtpVerb.Help,
        "STARTTLS" => SmtpVerb.StartTls,
        "AUTH" => SmtpVerb.Auth,
        _ => SmtpVerb.Unknown,
    };

    // ---- MAIL FROM ------------------------------------------------------------------------

    public static bool TryParseMail(string argument, [NotNullWhen(true)] out MailFromCommand? command, out SmtpReply error)
    {
        command = null;
        if (!TryStripPrefix(argument, "FROM:", out var rest))
        {
            error = SmtpReplies.SyntaxError;
            return false;
        }

        var pos = 0;
        if (!TryParsePath(rest, ref pos, allowNull: true, out var sender))
        {
            error = SmtpReplies.BadMailSyntax;
            return false;
        }

        long? size = null;
        var body = BodyType.Unspecified;
        var smtpUtf8 = false;
        var ret = DsnReturn.Unspecified;
        string? envid = null;
        int? priority = null;
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (key, value) in Parameters(rest, pos))
        {
            if (key is null || !seen.Add(key))
            {
                error = key is null ? SmtpReplies.SyntaxError : SmtpReplies.DuplicateParameter;
                return false;
            }

            var ok = key.ToUpperInvariant() switch
            {
                "SIZE" => TryParseSize(value, out size),
                "BODY" => TryParseBody(value, out body),
                "SMTPUTF8" => value is null && (smtpUtf8 = true),
                "RET" => TryParseRet(value, out ret),
                "ENVID" => TryDecodeXtext(value, out envid) && envid.Length is > 0 and <= 100,
                "MT-PRIORITY" => TryParsePriority(value, out priority),
                "AUTH" => value is not null, // RFC 4954 §5: accepted and not trusted
                _ => (bool?)null,
            };
            if (ok is null)
            {
                error = SmtpReplies.UnknownParameter;
                return false;
            }

            if (ok == false)
            {
                error = key.Equals("MT-PRIORITY", StringComparison.OrdinalIgnoreCase) ? SmtpReplies.BadPriority : SmtpReplies.BadParameterValue;
                return false;
            }
        }

        if (sender is not null && !sender.IsAscii && !smtpUtf8)
        {
            error = SmtpReplies.NonAsciiAddress;
            return false;
        }

        command = new MailFromCommand(sender, size, body, smtpUtf8, ret, envid, priority);
        error = default;
        return true;
    }

    // ---- RCPT TO --------------------------------------------------------------------------

    public static bool TryParseRcpt(string argument, bool smtpUtf8, [NotNullWhen(true)] out RcptToCommand? command, out SmtpReply error)
    {
        command = null;
        if (!TryStripPrefix(argument, "TO:", out var rest))
        {
            error = SmtpReplies.SyntaxError;
            return false;
        }

        var pos = 0;
        var postmaster = false;
        SmtpPath? recipient;
        if (rest.StartsWith("<postmaster>", StringComparison.OrdinalIgnoreCase))
        {
            // RFC 5321 §4.5.1: <Postmaster> without a domain must be accepted.
            postmaster = true;
            recipient = new SmtpPath("postmaster", "", false, false);
            pos = "<postmaster>".Length;
        }
        else if (!TryParsePath(rest, ref pos, allowNull: false, out recipient) || recipient is null)
        {
            error = SmtpReplies.BadRcptSyntax;
            return false;
        }

        var notify = DsnNotify.Default;
        string? orcpt = null;
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (key, value) in Parameters(rest, pos))
        {
            if (key is null || !seen.Add(key))
            {
                error = key is null ? SmtpReplies.SyntaxError : SmtpReplies.DuplicateParameter;
                return false;
            }

            var ok = key.ToUpperInvariant() switch
            {
                "NOTIFY" => TryParseNotify(value, out notify),
                "ORCPT" => TryParseOrcpt(value, out orcpt),
                _ => (bool?)null,
            };
            if (ok is null)
            {
                error = SmtpReplies.UnknownParameter;
                return false;
            }

            if (ok == false)
            {
                error = SmtpReplies.BadParameterValue;
                return false;
            }
        }

        if (!recipient.IsAscii && !smtpUtf8)
        {
            error = SmtpReplies.NonAsciiAddress;
            return false;
        }

        command = new RcptToCommand(recipient, notify, orcpt, postmaster);
        error = default;
        return true;
    }

    // ---- BDAT / AUTH ----------------------------------------------------------------------

    public static bool TryParseBdat(string argument, out BdatCommand command)
    {
        command = default;
        var parts = argument.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length is < 1 or > 2 || !IsDigits(parts[0]) || parts[0].Length > 18)
        {
            return false;
        }

        var last = false;
        if (parts.Length == 2)
        {
            if (!parts[1].Equals("LAST", StringComparison.OrdinalIgnoreCase))
            {
                return false;
            }

            last = true;
        }

        command = new BdatCommand(long.Parse(parts[0], CultureInfo.InvariantCulture), last);
        return true;
    }

    public static bool TryParseAuth(string argument, out AuthCommand command)
    {
        var parts = argument.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        command = parts.Length switch
        {
            1 => new AuthCommand(parts[0].ToUpperInvariant(), null),
            2 => new AuthCommand(parts[0].ToUpperInvariant(), parts[1]),
            _ => default,
        };
        return parts.Length is 1 or 2;
    }

    // ---- paths ----------------------------------------------------------------------------

    /// <summary>
    /// Parses <c>"&lt;" [A-d-l ":"] Mailbox "&gt;"</c> (or <c>&lt;&gt;</c> when allowed) starting at
    /// <paramref name="pos"/>; leaves <paramref name="pos"/> after the closing bracket.
    /// </summary>
    public static bool TryParsePath(string s, ref int pos, bool allowNull, out SmtpPath? path)
    {
        path = null;
        if (pos >= s.Length || s[pos] != '<')
        {
            return false;
        }

        pos++;
        if (pos < s.Length && s[pos] == '>')
        {
            pos++;
            return allowNull;
        }

        var route = false;
        if (pos < s.Length && s[pos] == '@')
        {
            // A-d-l: "@" Domain *( "," "@" Domain ) ":"
            while (true)
            {
                pos++; // '@'
                if (!TryParseDomain(s, ref pos, out _))
                {
                    return false;
                }

                if (pos < s.Length && s[pos] == ',' && pos + 1 < s.Length && s[pos + 1] == '@')
                {
                    pos++;
                    continue;
                }

                if (pos < s.Length && s[pos] == ':')
                {
                    pos++;
                    route = true;
                    break;
                }

                return false;
            }
        }

        if (!TryParseLocalPart(s, ref pos, out var local, out var quoted)
            || pos >= s.Length || s[pos] != '@')
        {
            return false;
        }

        pos++;
        string domain;
        if (pos < s.Length && s[pos] == '[')
        {
            if (!TryParseAddressLiteral(s, ref pos, out domain))
            {
                return false;
            }
        }
        else if (!TryParseDomain(s, ref pos, out domain))
        {
            return false;
        }

        if (pos >= s.Length || s[pos] != '>')
        {
            return false;
        }

        pos++;
        // RFC 5321 §4.5.3.1: local part 64 octets, domain 255, whole path 256.
        if (Encoding.UTF8.GetByteCount(local) > 64 || Encoding.UTF8.GetByteCount(domain) > 255
            || Encoding.UTF8.GetByteCount(local) + Encoding.UTF8.GetByteCount(domain) + 3 > 256)
        {
            return false;
        }

        path = new SmtpPath(local, domain, quoted, route);
        return true;
    }

    private static bool TryParseLocalPart(string s, ref int pos, out string local, out bool quoted)
    {
        var start = pos;
        quoted = false;
        local = "";
        if (pos < s.Length && s[pos] == '"')
        {
            quoted = true;
            pos++;
            while (pos < s.Length && s[pos] != '"')
            {
                var c = s[pos];
                if (c == '\\')
                {
                    if (pos + 1 >= s.Length || s[pos + 1] < 32 || s[pos + 1] > 126)
                    {
                        return false;
                    }

                    pos += 2;
                    continue;
                }

                if (!(c is >= (char)32 and <= (char)126 || c >= (char)0x80) || c == '\uFFFD')
                {
                    return false;
                }

                pos++;
            }

            if (pos >= s.Length)
            {
                return false;
            }

            pos++;
            local = s[start..pos];
            return true;
        }

        // Dot-string = Atom *("." Atom)
        var atomLength = 0;
        while (pos < s.Length)
        {
            var c = s[pos];
            if (IsAtext(c))
            {
                atomLength++;
            }
            else if (c == '.' && atomLength > 0)
            {
                atomLength = 0;
            }
            else
            {
                break;
            }

            pos++;
        }

        if (atomLength == 0)
        {
            return false;
        }

        local = s[start..pos];
        return true;
    }

    private static bool IsAtext(char c) =>
        char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-/=?^_`{|}~".Contains(c) || (c >= 0x80 && c != '\uFFFD' && !char.IsControl(c) && !char.IsWhiteSpace(c));

    /// <summary>Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str] (U-labels allowed for SMTPUTF8).</summary>
    private static bool TryParseDomain(string s, ref int pos, out string domain)
    {
        var start = pos;
        domain = "";
        var label = 0;
        var lastHyphen = false;
        while (pos < s.Length)
        {
            var c = s[pos];
            var letDig = char.IsAsciiLetterOrDigit(c) || (c >= 0x80 && c != '\uFFFD' && char.IsLetterOrDigit(c));
            if (letDig)
            {
                label++;
                lastHyphen = false;
            }
            else if (c == '-' && label > 0)
            {
                label++;
                lastHyphen = true;
            }
            else if (c == '.' && label > 0 && !lastHyphen)
            {
                label = 0;
            }
            else
            {
                break;
            }

            if (label > 63)
            {
                return false;
            }

            pos++;
        }

        if (label == 0 || lastHyphen)
        {
            return false;
        }

        domain = s[start..pos];
        return true;
    }

    private static bool TryParseAddressLiteral(string s, ref int pos, out string literal)
    {
        literal = "";
        var close = s.IndexOf(']', pos);
        if (close < 0)
        {
            return false;
        }

        var inner = s[(pos + 1)..close];
        var ok = inner.StartsWith("IPv6:", StringComparison.OrdinalIgnoreCase)
            ? System.Net.IPAddress.TryParse(inner[5..], out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            : inner.Count(c => c == '.') == 3 && System.Net.IPAddress.TryParse(inner, out var v4) && v4.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;
        if (!ok)
        {
            return false;
        }

        literal = s[pos..(close + 1)];
        pos = close + 1;
        return true;
    }

    // ---- parameters -----------------------------------------------------------------------

    /// <summary>esmtp-param = esmtp-keyword ["=" esmtp-value], separated by spaces. A null key means bad syntax.</summary>
    private static IEnumerable<(string? Key, string? Value)> Parameters(string s, int pos)
    {
        if (pos < s.Length && s[pos] != ' ')
        {
            yield return (null, null);
            yield break;
        }

        foreach (var token in s[pos..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = token.IndexOf('=');
            var key = eq < 0 ? token : token[..eq];
            var value = eq < 0 ? null : token[(eq + 1)..];
            var keyOk = key.Length > 0 && char.IsAsciiLetterOrDigit(key[0]) && key.All(c => char.IsAsciiLetterOrDigit(c) || c == '-');
            var valueOk = value is null || (value.Length > 0 && value.All(c => c > ' ' && c != '=' && c != 0x7F));
            yield return keyOk && valueOk ? (key, value) : (null, null);
        }
    }

    private static bool TryStripPrefix(string argument, string prefix, out string rest)
    {
        rest = "";
        if (!argument.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        // Tolerate "MAIL FROM: <a@b>": common in the wild, unambiguous.
        rest = argument[prefix.Length..].TrimStart(' ');
        return true;
    }

    private static bool TryParseSize(string? value, out long? size)
    {
        size = null;
        if (value is null || !IsDigits(value))
        {
            return false;
        }

        size = value.Length > 18 ? long.MaxValue : long.Parse(value, CultureInfo.InvariantCulture);
        return true;
    }

    private static bool TryParseBody(string? value, out BodyType body)
    {
        body = value?.ToUpperInvariant() switch
        {
            "7BIT" => BodyType.SevenBit,
            "8BITMIME" => BodyType.EightBitMime,
            _ => BodyType.Unspecified, // BINARYMIME is not advertised
        };
        return body != BodyType.Unspecified;
    }

    private static bool TryParseRet(string? value, out DsnReturn ret)
    {
        ret = value?.ToUpperInvariant() switch
        {
            "FULL" => DsnReturn.Full,
            "HDRS" => DsnReturn.Headers,
            _ => DsnReturn.Unspecified,
        };
        return ret != DsnReturn.Unspecified;
    }

    /// <summary>RFC 6710 §3: an optionally signed integer; DESIGN.md restricts it to −9..9.</summary>
    public static bool TryParsePriority(string? value, out int? priority)
    {
        priority = null;
        if (value is null || value.Length is 0 or > 3)
        {
            return false;
        }

        var digits = value[0] is '+' or '-' ? value[1..] : value;
        if (!IsDigits(digits) || !int.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) || n is < -9 or > 9)
        {
            return false;
        }

        priority = n;
        return true;
    }

    private static bool TryParseNotify(string? value, out DsnNotify notify)
    {
        notify = DsnNotify.Default;
        if (value is null)
        {
            return false;
        }

        var parts = value.Split(',');
        if (parts.Length == 1 && parts[0].Equals("NEVER", StringComparison.OrdinalIgnoreCase))
        {
            notify = DsnNotify.Never;
            return true;
        }

        foreach (var part in parts)
        {
            var flag = part.ToUpperInvariant() switch
            {
                "SUCCESS" => DsnNotify.Success,
                "FAILURE" => DsnNotify.Failure,
                "DELAY" => DsnNotify.Delay,
                _ => DsnNotify.Default,
            };
            if (flag == DsnNotify.Default || notify.HasFlag(flag))
            {
                notify = DsnNotify.Default;
                return false;
            }

            notify |= flag;
        }

        return true;
    }

    /// <summary>ORCPT = addr-type ";" xtext (RFC 3461 §4.2); kept as <c>type;decoded</c>.</summary>
    private static bool TryParseOrcpt(string? value, out string? orcpt)
    {
        orcpt = null;
        var semi = value?.IndexOf(';') ?? -1;
        if (value is null || semi <= 0)
        {
            return false;
        }

        var type = value[..semi];
        if (!type.All(c => char.IsAsciiLetterOrDigit(c) || c == '-') || !TryDecodeXtext(value[(semi + 1)..], out var address) || address.Length == 0)
        {
            return false;
        }

        orcpt = $"{type};{address}";
        return orcpt.Length <= 500;
    }

    /// <summary>RFC 3461 §4: xtext is printable ASCII except '+' and '=', with "+XX" hex escapes.</summary>
    public static bool TryDecodeXtext(string? value, [NotNullWhen(true)] out string? decoded)
    {
        decoded = null;
        if (value is null)
        {
            return false;
        }

        var bytes = new List<byte>(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (c == '+')
            {
                if (i + 2 >= value.Length || !IsUpperHex(value[i + 1]) || !IsUpperHex(value[i + 2]))
                {
                    return false;
                }

                bytes.Add(byte.Parse(value.AsSpan(i + 1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                i += 2;
            }
            else if (c is >= '!' and <= '~' && c != '=')
            {
                bytes.Add((byte)c);
            }
            else
            {
                return false;
            }
        }

        try
        {
            decoded = StrictUtf8.GetString(bytes.ToArray());
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }

    private static bool IsUpperHex(char c) => char.IsAsciiDigit(c) || c is >= 'A' and <= 'F';

    private static bool IsDigits(string s) => s.Length > 0 && s.All(char.IsAsciiDigit);
}
