// DsnBuilder: one RFC 3464 delivery status notification as a MimeKit message: multipart/report with a
// human-readable part, message/delivery-status and the original (whole or headers). Built with MimeKit's
// types, never by concatenating MIME text.
using System.Text;
using MimeKit;
using MimeKit.Utils;
using Relay.Config.Settings;
using Relay.Spool;

namespace Relay.Dsn;

/// <summary>What of the original a DSN carries back (RFC 3461 §4.3).</summary>
public enum DsnReturned { None, Headers, Full }

public sealed class DsnBuilder(string hostname, DsnSettings settings, DsnOptions options)
{
    /// <summary>RFC 3461 RET: failure DSNs follow RET (no RET: whole message up to the size limit); delay and
    /// success DSNs carry only the headers, as RET speaks of failed DSNs and Postfix does the same.</summary>
    public DsnReturned ReturnFor(DsnRequest request)
    {
        if (request.Kind != DsnKind.Failure) return DsnReturned.Headers;
        // message/rfc822 may not carry binary content to a server without BINARYMIME (RFC 3030), so headers only.
        if (request.Original.Body == BodyType.BinaryMime) return DsnReturned.Headers;
        return request.Original.Return switch
        {
            DsnReturn.Full => DsnReturned.Full,
            DsnReturn.Headers => DsnReturned.Headers,
            _ => request.Original.Size <= options.FullReturnLimit ? DsnReturned.Full : DsnReturned.Headers,
        };
    }

    public static string SubjectFor(DsnKind kind) => kind switch
    {
        DsnKind.Failure => "Undelivered Mail Returned to Sender",
        DsnKind.Delay => "Delayed Mail (still being retried)",
        _ => "Successful Mail Delivery Report",
    };

    /// <summary>
    /// Builds the DSN. <paramref name="original"/> is the original message as received (null when it could not
    /// be read: the DSN then goes without it and says so). Only the part <see cref="ReturnFor"/> needs is read.
    /// </summary>
    public async Task<MimeMessage> BuildAsync(DsnRequest request, string dsnId, Stream? original, CancellationToken cancellationToken)
    {
        var returned = original is null ? DsnReturned.None : ReturnFor(request);
        MimeEntity? originalPart = null;
        HeaderList? originalHeaders = null;
        if (original is not null && returned == DsnReturned.Full)
        {
            var message = await MimeMessage.LoadAsync(original, cancellationToken);
            originalHeaders = message.Headers;
            originalPart = new MessagePart("rfc822") { Message = message };
        }
        else if (original is not null)
        {
            originalHeaders = await HeaderList.LoadAsync(original, cancellationToken);
            originalPart = new TextRfc822Headers { Message = new MimeMessage(originalHeaders) };
        }

        var report = new MultipartReport("delivery-status")
        {
            HumanPart(HumanReadable(request, returned)),
            DeliveryStatus(request),
        };
        if (originalPart is not null) report.Add(originalPart);

        var dsn = new MimeMessage();
        dsn.From.Add(new MailboxAddress(settings.FromName, settings.FromAddress));
        if (MailboxAddress.TryParse(request.Original.Sender, out var to)) dsn.To.Add(to);
        else dsn.Headers.Add(HeaderId.To, $"<{request.Original.Sender}>");   // accepted inbound, unusual for MimeKit: keep as is
        dsn.Subject = SubjectFor(request.Kind);
        dsn.Date = request.ReportedAt;
        dsn.MessageId = $"{dsnId}.dsn@{hostname}";
        // RFC 3834: automatic replies must not be answered automatically.
        dsn.Headers.Add("Auto-Submitted", "auto-replied");
        if (originalHeaders?[HeaderId.MessageId] is { Length: > 0 } originalMessageId)
        {
            dsn.Headers.Add(HeaderId.InReplyTo, originalMessageId.Trim());
            dsn.Headers.Add(HeaderId.References, originalMessageId.Trim());
        }
        dsn.Body = report;
        return dsn;
    }

    private MessageDeliveryStatus DeliveryStatus(DsnRequest request)
    {
        var status = new MessageDeliveryStatus();
        var perMessage = new HeaderList { { "Reporting-MTA", $"dns; {hostname}" } };
        if (!string.IsNullOrEmpty(request.Original.EnvelopeId)) perMessage.Add("Original-Envelope-Id", request.Original.EnvelopeId);
        perMessage.Add("X-Relay-Queue-ID", request.MessageId);
        perMessage.Add("Arrival-Date", DateUtils.FormatDate(request.Original.ArrivedAt));
        status.StatusGroups.Add(perMessage);

        foreach (var r in request.Recipients)
        {
            var group = new HeaderList();
            if (!string.IsNullOrEmpty(r.OriginalRecipient)) group.Add("Original-Recipient", r.OriginalRecipient);
            group.Add("Final-Recipient", $"{AddressType(r.Address)}; {r.Address}");
            group.Add("Action", r.Action);
            group.Add("Status", r.Status);
            if (r.RemoteMta is not null) group.Add("Remote-MTA", $"dns; {r.RemoteMta}");
            if (r.Diagnostic is not null) group.Add("Diagnostic-Code", r.Diagnostic);
            if (r.LastAttemptAt is { } last) group.Add("Last-Attempt-Date", DateUtils.FormatDate(last));
            if (r.WillRetryUntil is { } until) group.Add("Will-Retry-Until", DateUtils.FormatDate(until));
            status.StatusGroups.Add(group);
        }
        return status;
    }

    // RFC 6533: an address that is not ASCII is reported with the utf-8 address type.
    private static string AddressType(string address) => address.All(char.IsAscii) ? "rfc822" : "utf-8";

    // Plain 7bit when it is ASCII (it usually is); quoted-printable only for UTF-8 addresses or host names.
    private static TextPart HumanPart(string text) => new("plain")
    {
        Text = text,
        ContentTransferEncoding = text.All(char.IsAscii) ? ContentEncoding.SevenBit : ContentEncoding.QuotedPrintable,
    };

    private string HumanReadable(DsnRequest request, DsnReturned returned)
    {
        var text = new StringBuilder();
        text.Append("This is the mail system at host ").Append(hostname).Append(".\n\n");
        switch (request.Kind)
        {
            case DsnKind.Failure:
                text.Append("Your message could not be delivered to the recipients below.\n")
                    .Append("This is a permanent error: the relay has given up on them.\n");
                break;
            case DsnKind.Delay:
                text.Append("Your message has not been delivered yet to the recipients below.\n")
                    .Append("The relay is still trying; you do not need to send it again.\n");
                if (request.Recipients.Select(r => r.WillRetryUntil).Where(u => u is not null).Max() is { } until)
                    text.Append("It will keep trying until ").Append(DateUtils.FormatDate(until)).Append(".\n");
                break;
            default:
                text.Append("Your message was delivered to the recipients below, as you asked to be told.\n");
                break;
        }
        text.Append('\n');
        foreach (var r in request.Recipients)
            text.Append('<').Append(r.Address).Append(">: ").Append(r.Reason).Append('\n');
        text.Append('\n').Append(returned switch
        {
            DsnReturned.Full => "The delivery report and your original message are attached.\n",
            DsnReturned.Headers => "The delivery report and the headers of your message are attached.\n",
            _ => "The delivery report is attached; your original message could not be read back.\n",
        });
        text.Append("Queue ID of your message: ").Append(request.MessageId).Append(", received ")
            .Append(DateUtils.FormatDate(request.Original.ArrivedAt)).Append(".\n");
        return text.ToString();
    }
}
