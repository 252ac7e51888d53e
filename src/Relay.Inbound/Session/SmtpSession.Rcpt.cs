// RCPT TO: relay control, recipient limit, classification and queue back-pressure.
// The strategy runs here without headers (subject and header() are empty) only to find the
// virtual queue for the back-pressure check; the schedule stored with the message is decided
// again after DATA with the full context (SmtpSession.Data.cs).
using Relay.Config.Strategy;
using Relay.Inbound.Policy;
using Relay.Inbound.Protocol;

namespace Relay.Inbound.Session;

internal sealed partial class SmtpSession
{
    private SmtpReply HandleRcpt(string argument)
    {
        if (_state != SessionState.Greeted)
        {
            return SmtpReplies.EhloFirst;
        }

        if (_transaction is not { } transaction)
        {
            return SmtpReplies.MailFirst;
        }

        if (transaction.Message is not null)
        {
            return SmtpReplies.NestedMail; // RCPT in the middle of a BDAT sequence
        }

        if (!SmtpCommandParser.TryParseRcpt(argument, transaction.Mail.SmtpUtf8, out var rcpt, out var error))
        {
            return error;
        }

        var address = rcpt.IsPostmaster ? $"postmaster@{Hostname}" : rcpt.Recipient.Address;
        if (!rcpt.IsPostmaster && RelayPolicy.NeedsRelayPermission(rcpt.Recipient, _config.Local)
            && !RelayPolicy.MayRelay(Limits, _remoteIp, IsAuthenticated))
        {
            _runtime.Logger.RecipientRejected(_remoteIp, address, SmtpReplies.RelayDenied.ToString());
            return SmtpReplies.RelayDenied;
        }

        if (transaction.Recipients.Any(r => r.Address.Equals(address, StringComparison.OrdinalIgnoreCase)))
        {
            return SmtpReplies.RecipientOk; // a duplicate is accepted once (RFC 5321 §3.3 allows either)
        }

        if (transaction.Recipients.Count >= Limits.MaxRecipients)
        {
            return SmtpReplies.TooManyRecipients;
        }

        var context = RecipientContextFor(transaction, address, transaction.RcptPriority(Limits.Priority.Default), size: transaction.Mail.DeclaredSize ?? 0, headers: null);
        if (Classify(context) is not { } decision)
        {
            return SmtpReplies.LocalError;
        }

        if (!_runtime.Admission.HasRoom(decision.Schedule.QueueName))
        {
            _runtime.LogQueueFull(decision.Schedule.QueueName);
            return SmtpReplies.QueueFull;
        }

        transaction.Recipients.Add(new AcceptedRecipient(address, rcpt.Notify, rcpt.OriginalRecipient));
        return SmtpReplies.RecipientOk;
    }

    private RecipientContext RecipientContextFor(Transaction transaction, string recipient, int priority, long size, MimeKit.HeaderList? headers) => new()
    {
        Recipient = recipient,
        Sender = transaction.Sender,
        Priority = priority,
        Source = "smtp",
        Size = size,
        RemoteIp = _remoteIp.ToString(),
        Listener = _listener.Settings.Name,
        AuthenticatedAs = _authenticatedAs ?? "",
        Subject = headers?[MimeKit.HeaderId.Subject] ?? "",
        Headers = headers is null ? null : name => headers[name],
    };

    /// <summary>Runs the strategy; null when it threw (the caller answers 451 4.3.0).</summary>
    private StrategyDecision? Classify(RecipientContext context)
    {
        try
        {
            var decision = _runtime.Classify(context);
            if (decision.Error is not null)
            {
                _runtime.Logger.ClassificationFellBack(context.Recipient, decision.Schedule.Name, decision.Error);
            }

            return decision;
        }
        catch (Exception e)
        {
            _runtime.Logger.ClassificationFailed(context.Recipient, e);
            return null;
        }
    }
}
