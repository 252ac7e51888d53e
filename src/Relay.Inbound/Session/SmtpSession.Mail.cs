// MAIL FROM: start a transaction with the sender and its parameters.
using Relay.Inbound.Policy;
using Relay.Inbound.Protocol;

namespace Relay.Inbound.Session;

internal sealed partial class SmtpSession
{
    private SmtpReply HandleMail(string argument)
    {
        if (_state != SessionState.Greeted)
        {
            return SmtpReplies.EhloFirst;
        }

        if (_transaction is not null)
        {
            return SmtpReplies.NestedMail;
        }

        if (_listener.Settings.RequireAuth && !IsAuthenticated)
        {
            return SmtpReplies.AuthRequired;
        }

        if (!SmtpCommandParser.TryParseMail(argument, out var mail, out var error))
        {
            return error;
        }

        if (mail.DeclaredSize > Limits.MaxMessageSize)
        {
            return SmtpReplies.TooBig;
        }

        // RFC 6710 §5: MT-PRIORITY from a client we do not trust is ignored, not refused.
        var mtAllowed = mail.MtPriority is not null && PriorityResolver.MayUseMtPriority(Limits.Priority, _remoteIp);
        _transaction = new Transaction(mail, mtAllowed ? mail.MtPriority : null);
        return SmtpReplies.SenderOk;
    }
}
