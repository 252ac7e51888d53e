// DATA and BDAT: stream the message into the spool, then classify every recipient with the full
// context (headers, subject, size), decide the priority and answer 250 only after the commit.
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using MimeKit;
using MimeKit.Utils;
using Relay.Inbound.Content;
using Relay.Inbound.Policy;
using Relay.Inbound.Protocol;
using Relay.Spool;

namespace Relay.Inbound.Session;

internal sealed partial class SmtpSession
{
    private const int ScratchSize = 16 * 1024;
    private byte[]? _scratch;

    private async ValueTask<SmtpReply?> HandleDataAsync(string argument)
    {
        if (CheckMessageSequence() is { } sequenceError)
        {
            return sequenceError;
        }

        var transaction = _transaction!;
        if (transaction.Message is not null)
        {
            return SmtpReplies.DataAfterBdat;
        }

        if (argument.Length > 0)
        {
            return SmtpReplies.SyntaxError;
        }

        if (!TryBeginMessage(transaction, out var beginError))
        {
            await ResetTransactionAsync();
            return beginError;
        }

        Write(SmtpReplies.StartData);
        if (!await ReceiveDataAsync(transaction.Writer!))
        {
            _closing = true; // connection lost in the middle of the data
            return null;
        }

        return await FinishMessageAsync(transaction);
    }

    private async ValueTask<SmtpReply?> HandleBdatAsync(string argument)
    {
        if (!SmtpCommandParser.TryParseBdat(argument, out var bdat))
        {
            // Without a size the chunk cannot be skipped; its bytes will read as (bad) commands.
            return SmtpReplies.SyntaxError;
        }

        // RFC 3030 §3: the chunk is always read, even when the command is refused.
        var sequenceError = CheckMessageSequence();
        var transaction = _transaction;
        if (sequenceError is null && transaction!.Message is null && !TryBeginMessage(transaction, out var beginError))
        {
            sequenceError = beginError;
            await ResetTransactionAsync();
        }

        if (!await ReceiveChunkAsync(bdat.Size, sequenceError is null ? transaction!.Writer : null))
        {
            _closing = true;
            return null;
        }

        if (sequenceError is not null)
        {
            return sequenceError == SmtpReplies.MailFirst ? SmtpReplies.BdatAfterError : sequenceError;
        }

        var writer = transaction!.Writer!;
        if (writer.Rejection != MessageRejection.None)
        {
            // Fail fast: the rest of the chunks get 503 until MAIL starts over.
            var reply = RejectionReply(writer);
            _runtime.Logger.MessageRejected(transaction.Message!.Id, _remoteIp, reply.ToString());
            await ResetTransactionAsync();
            return reply;
        }

        return bdat.Last ? await FinishMessageAsync(transaction) : SmtpReplies.ChunkOk(bdat.Size);
    }

    private SmtpReply? CheckMessageSequence()
    {
        if (_state != SessionState.Greeted)
        {
            return SmtpReplies.EhloFirst;
        }

        if (_transaction is null)
        {
            return SmtpReplies.MailFirst;
        }

        return _transaction.Recipients.Count == 0 ? SmtpReplies.NoValidRecipients : null;
    }

    private bool TryBeginMessage(Transaction transaction, out SmtpReply error)
    {
        try
        {
            var message = _runtime.Spool.Begin();
            transaction.Message = message;
            transaction.StartedAt = _runtime.Clock.GetUtcNow();
            transaction.Writer = new IncomingMessageWriter(
                message, Limits.MaxMessageSize, Limits.MaxReceivedHeaders,
                headers => TraceHeaders(headers, transaction, message.Id));
            error = default;
            return true;
        }
        catch (Exception e)
        {
            _runtime.Logger.SpoolFailed("-", SmtpReplies.SpoolFailed.ToString(), e);
            error = e is SpoolWriteException ? SmtpReplies.SpoolFailed : SmtpReplies.LocalError;
            return false;
        }
    }

    /// <summary>Reads dot-stuffed data up to CRLF.CRLF. False when the connection ended first.</summary>
    private async ValueTask<bool> ReceiveDataAsync(IncomingMessageWriter writer)
    {
        var unstuffer = new DotUnstuffer();
        var scratch = _scratch ??= new byte[ScratchSize + 1];
        var token = _dataCts.Token;
        while (true)
        {
            var result = await ReadAsync(token);
            var buffer = result.Buffer;
            var consumed = 0L;
            var ended = false;
            foreach (var segment in buffer)
            {
                var rest = segment;
                while (!rest.IsEmpty && !ended)
                {
                    var chunk = rest.Length > ScratchSize ? rest[..ScratchSize] : rest;
                    var n = unstuffer.Process(chunk.Span, scratch, out var written, out ended);
                    await writer.AppendAsync(scratch.AsMemory(0, written), token);
                    rest = rest[n..];
                    consumed += n;
                }

                if (ended)
                {
                    break;
                }
            }

            // Nothing of a buffer may be read after AdvanceTo: its segments go back to the pipe's pool and are
            // reused (a Length read then was garbage, left a reply unflushed and hung the client).
            var position = buffer.GetPosition(consumed);
            if (ended)
            {
                _buffered = consumed < buffer.Length;
                _input.AdvanceTo(position);
                return true;
            }

            _input.AdvanceTo(position, buffer.End);
            _buffered = false;
            if (result.IsCompleted || result.IsCanceled)
            {
                return false;
            }
        }
    }

    /// <summary>Reads exactly <paramref name="size"/> octets of a BDAT chunk into the writer (or nowhere).</summary>
    private async ValueTask<bool> ReceiveChunkAsync(long size, IncomingMessageWriter? writer)
    {
        var remaining = size;
        var token = _dataCts.Token;
        while (remaining > 0)
        {
            var result = await ReadAsync(token);
            var buffer = result.Buffer;
            var take = buffer.Slice(0, Math.Min(remaining, buffer.Length));
            if (writer is not null)
            {
                foreach (var segment in take)
                {
                    await writer.AppendAsync(segment, token);
                }
            }

            remaining -= take.Length;
            _buffered = take.Length < buffer.Length;   // before AdvanceTo (see ReceiveDataAsync)
            _input.AdvanceTo(take.End);
            if (remaining > 0 && (result.IsCompleted || result.IsCanceled))
            {
                return false;
            }
        }

        return true;
    }

    private async ValueTask<SmtpReply> FinishMessageAsync(Transaction transaction)
    {
        var reply = await AcceptMessageAsync(transaction);
        _runtime.Events.MessageAnswered(reply.Code);
        return reply;
    }

    private async ValueTask<SmtpReply> AcceptMessageAsync(Transaction transaction)
    {
        var message = transaction.Message!;
        var writer = transaction.Writer!;
        try
        {
            await writer.CompleteAsync(_dataCts.Token);
            if (writer.Rejection != MessageRejection.None)
            {
                var reply = RejectionReply(writer);
                if (writer.SpoolError is { } spoolError)
                {
                    _runtime.Logger.SpoolFailed(message.Id, reply.ToString(), spoolError);
                }
                else
                {
                    _runtime.Logger.MessageRejected(message.Id, _remoteIp, reply.ToString());
                }

                return reply;
            }

            var headers = writer.Headers ?? [];
            var priority = PriorityResolver.Resolve(
                transaction.HonouredMtPriority, transaction.HonouredMtPriority is not null,
                headers[PriorityResolver.HeaderName],
                PriorityResolver.MayUseHeader(Limits, _remoteIp, IsAuthenticated),
                Limits.Priority.Default);

            var recipients = new List<RecipientEntry>(transaction.Recipients.Count);
            foreach (var rcpt in transaction.Recipients)
            {
                var context = RecipientContextFor(transaction, rcpt.Address, priority, message.Length, headers);
                if (Classify(context) is not { } decision)
                {
                    return SmtpReplies.LocalError;
                }

                recipients.Add(new RecipientEntry
                {
                    Address = rcpt.Address,
                    OriginalRecipient = rcpt.OriginalRecipient,
                    Notify = rcpt.Notify,
                    Schedule = decision.Schedule.Name,
                    Queue = decision.Schedule.QueueName,
                });
            }

            var envelope = new MessageEnvelope
            {
                Id = message.Id,
                Sender = transaction.Sender,
                ArrivedAt = _runtime.Clock.GetUtcNow(),
                Recipients = recipients,
                Priority = priority,
                Source = "smtp",
                EnvelopeId = transaction.Mail.EnvelopeId,
                Return = transaction.Mail.Return,
                Body = transaction.Mail.Body,
                SmtpUtf8 = transaction.Mail.SmtpUtf8,
                Size = message.Length,
                RemoteIp = _remoteIp.ToString(),
                HeloName = _helo,
                AuthenticatedAs = _authenticatedAs,
                Listener = _listener.Settings.Name,
            };

            try
            {
                // Not cancelled by a disconnect: once the bytes are in, finishing the commit is cheaper than a retry.
                await message.CommitAsync(envelope, CancellationToken.None);
            }
            catch (Exception e)
            {
                var reply = e is SpoolWriteException ? SmtpReplies.SpoolFailed : SmtpReplies.LocalError;
                _runtime.Logger.SpoolFailed(message.Id, reply.ToString(), e);
                return reply;
            }

            if (_runtime.Logger.IsEnabled(LogLevel.Information))   // the schedule list is built only when logged
                _runtime.Logger.Queued(message.Id, transaction.Sender, envelope.Size, recipients.Count, priority,
                    string.Join(',', recipients.Select(r => r.Schedule).Distinct()));
            return SmtpReplies.Queued(message.Id);
        }
        finally
        {
            // RFC 5321 §4.1.1.4: the transaction ends with the data, accepted or not.
            await ResetTransactionAsync();
        }
    }

    private static SmtpReply RejectionReply(IncomingMessageWriter writer) => writer.Rejection switch
    {
        MessageRejection.TooBig => SmtpReplies.TooBig,
        MessageRejection.HeaderTooBig => SmtpReplies.HeaderTooBig,
        MessageRejection.MailLoop => SmtpReplies.MailLoop,
        MessageRejection.BareLineEnding => SmtpReplies.BareLineEndingInData,
        MessageRejection.Nul => SmtpReplies.NulInData,
        MessageRejection.LineTooLong => SmtpReplies.TextLineTooLong,
        MessageRejection.SpoolFailed when writer.SpoolError is SpoolWriteException => SmtpReplies.SpoolFailed,
        _ => SmtpReplies.LocalError,
    };

    /// <summary>Received: (RFC 5321 §4.4, RFC 3848 protocol names), plus Message-ID and Date when missing.</summary>
    private byte[] TraceHeaders(HeaderList headers, Transaction transaction, string queueId)
    {
        var tls = Tls;
        var protocol = new StringBuilder(transaction.Mail.SmtpUtf8 ? "UTF8SMTP" : _esmtp ? "ESMTP" : "SMTP");
        if (tls is not null)
        {
            protocol.Append('S');
        }

        if (IsAuthenticated)
        {
            protocol.Append('A');
        }

        var date = DateUtils.FormatDate(transaction.StartedAt);
        var text = new StringBuilder();
        text.Append("Received: from ").Append(HeaderSafe(_helo ?? "unknown"))
            .Append(" (").Append(HeaderSafe(_reverseName ?? "unknown")).Append(" [").Append(_remoteIp).Append("])\r\n");
        if (tls is not null)
        {
            text.Append("\t(using ").Append(tls.SslProtocol).Append(" with cipher ").Append(tls.NegotiatedCipherSuite).Append(")\r\n");
        }

        text.Append("\tby ").Append(Hostname).Append(" (Relay) with ").Append(protocol).Append(" id ").Append(queueId);
        if (transaction.Recipients.Count == 1)
        {
            text.Append("\r\n\tfor <").Append(HeaderSafe(transaction.Recipients[0].Address)).Append('>');
        }

        text.Append("; ").Append(date).Append("\r\n");
        if (headers[HeaderId.MessageId] is null)
        {
            text.Append("Message-ID: <").Append(queueId).Append('.').Append(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6)))
                .Append('@').Append(Hostname).Append(">\r\n");
        }

        if (headers[HeaderId.Date] is null)
        {
            text.Append("Date: ").Append(date).Append("\r\n");
        }

        return Encoding.UTF8.GetBytes(text.ToString());
    }

    /// <summary>Client-supplied text inside our header: no controls, no comment delimiters.</summary>
    private static string HeaderSafe(string value)
    {
        var text = value.Length > 255 ? value[..255] : value;
        return string.Create(text.Length, text, static (span, source) =>
        {
            for (var i = 0; i < source.Length; i++)
            {
                var c = source[i];
                span[i] = char.IsControl(c) || c is '(' or ')' ? '?' : c;
            }
        });
    }
}
