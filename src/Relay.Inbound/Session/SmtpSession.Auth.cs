// AUTH PLAIN / LOGIN (RFC 4954, RFC 4616) against [session.relay] users.
// Offered and accepted only under TLS, or from loopback where nothing crosses a network.
using System.Text;
using Relay.Inbound.Policy;
using Relay.Inbound.Protocol;

namespace Relay.Inbound.Session;

internal sealed partial class SmtpSession
{
    private bool AuthAllowedHere => Limits.Relay.Users.Count > 0 && !IsAuthenticated && (Tls is not null || _isLoopback);

    private async ValueTask<SmtpReply?> HandleAuthAsync(string argument)
    {
        if (Limits.Relay.Users.Count == 0)
        {
            return SmtpReplies.AuthNotEnabled;
        }

        if (_state != SessionState.Greeted)
        {
            return SmtpReplies.EhloFirst;
        }

        if (IsAuthenticated)
        {
            return SmtpReplies.AlreadyAuthenticated;
        }

        if (_transaction is not null)
        {
            return SmtpReplies.AuthInTransaction;
        }

        if (Tls is null && !_isLoopback)
        {
            return SmtpReplies.EncryptionRequired;
        }

        if (!SmtpCommandParser.TryParseAuth(argument, out var auth))
        {
            return SmtpReplies.SyntaxError;
        }

        string user;
        string password;
        switch (auth.Mechanism)
        {
            case "PLAIN":
            {
                var (response, error) = auth.InitialResponse is { } initial ? (initial, null) : await ChallengeAsync("");
                if (error is not null)
                {
                    return error;
                }

                if (DecodeBase64(response!) is not { } decoded)
                {
                    return SmtpReplies.AuthBadBase64;
                }

                // RFC 4616: [authzid] NUL authcid NUL passwd
                var parts = decoded.Split('\0');
                if (parts.Length != 3 || (parts[0].Length > 0 && parts[0] != parts[1]))
                {
                    return Failed(auth.Mechanism, parts.Length == 3 ? parts[1] : "?");
                }

                (user, password) = (parts[1], parts[2]);
                break;
            }

            case "LOGIN":
            {
                var (userResponse, error) = auth.InitialResponse is { } initial ? (initial, null) : await ChallengeAsync("VXNlcm5hbWU6");
                if (error is not null)
                {
                    return error;
                }

                if (DecodeBase64(userResponse!) is not { } decodedUser)
                {
                    return SmtpReplies.AuthBadBase64;
                }

                var (passwordResponse, passwordError) = await ChallengeAsync("UGFzc3dvcmQ6");
                if (passwordError is not null)
                {
                    return passwordError;
                }

                if (DecodeBase64(passwordResponse!) is not { } decodedPassword)
                {
                    return SmtpReplies.AuthBadBase64;
                }

                (user, password) = (decodedUser, decodedPassword);
                break;
            }

            default:
                return SmtpReplies.AuthMechanismUnknown;
        }

        if (!Limits.Relay.Users.TryGetValue(user, out var secret) || !SecretVerifier.Verify(secret, password))
        {
            return Failed(auth.Mechanism, user);
        }

        _authenticatedAs = user;
        _runtime.Logger.AuthSucceeded(auth.Mechanism, _remoteIp, user);
        return SmtpReplies.AuthOk;
    }

    private SmtpReply Failed(string mechanism, string user)
    {
        _runtime.Logger.AuthFailed(mechanism, _remoteIp, user);
        return SmtpReplies.AuthFailed;
    }

    /// <summary>Sends a 334 challenge and reads the client's line; "*" cancels (RFC 4954 §4).</summary>
    private async ValueTask<(string? Response, SmtpReply? Error)> ChallengeAsync(string challenge)
    {
        Write(SmtpReplies.AuthChallenge(challenge));
        var (status, line) = await ReadLineAsync(SmtpLineReader.MaxAuthLine, _commandCts.Token);
        switch (status)
        {
            case null:
                _closing = true;
                return (null, SmtpReplies.AuthCancelled);
            case LineStatus.TooLong:
                return (null, SmtpReplies.LineTooLong);
            case LineStatus.BareLineFeed:
                return (null, SmtpReplies.BareLineEndingInCommand);
        }

        var text = Encoding.ASCII.GetString(line!).Trim();
        return text == "*" ? (null, SmtpReplies.AuthCancelled) : (text, null);
    }

    /// <summary>Base64 to UTF-8 text; "=" is the empty response (RFC 4954 §4).</summary>
    private static string? DecodeBase64(string text)
    {
        if (text == "=")
        {
            return "";
        }

        var bytes = new byte[text.Length];
        if (!Convert.TryFromBase64String(text, bytes, out var n))
        {
            return null;
        }

        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes, 0, n);
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
    }
}
