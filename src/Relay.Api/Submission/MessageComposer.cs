// MessageComposer: a ValidatedMessage → MIME bytes (CRLF) with MimeKit. BodyBuilder gives the usual shape:
// text + html → multipart/alternative; inline attachments (content-id) → multipart/related with the html;
// other attachments → multipart/mixed. Prepared for 7-bit transport, so any MX takes it unchanged.
using MimeKit;
using MimeKit.Utils;

namespace Relay.Api.Submission;

internal static class MessageComposer
{
    private static readonly FormatOptions Wire = CreateWireFormat();

    private static FormatOptions CreateWireFormat()
    {
        var options = FormatOptions.Default.Clone();
        options.NewLineFormat = NewLineFormat.Dos;   // the spool holds what goes on the wire
        return options;
    }

    public static MimeMessage Build(ValidatedMessage m, string hostname, DateTimeOffset now)
    {
        var message = new MimeMessage();
        message.From.Add(m.From);
        message.To.AddRange(m.To);
        message.Cc.AddRange(m.Cc);
        message.ReplyTo.AddRange(m.ReplyTo);
        message.Subject = m.Subject ?? "";
        message.Date = now;
        message.MessageId = MimeUtils.GenerateMessageId(hostname);
        foreach (var (name, value) in m.Headers) message.Headers.Add(name, value);

        var body = new BodyBuilder { TextBody = m.Text, HtmlBody = m.Html };
        foreach (var a in m.Attachments)
        {
            // Inline parts belong with the html they illustrate; without html they are inline attachments.
            var part = a.ContentId is not null && m.Html is not null
                ? body.LinkedResources.Add(a.Name, a.Content, a.ContentType)
                : body.Attachments.Add(a.Name, a.Content, a.ContentType);
            if (a.ContentId is null) continue;
            part.ContentId = a.ContentId;
            part.ContentDisposition = new ContentDisposition(ContentDisposition.Inline) { FileName = a.Name };
        }
        message.Body = body.ToMessageBody();
        message.Prepare(EncodingConstraint.SevenBit);
        return message;
    }

    public static byte[] ToBytes(MimeMessage message)
    {
        using var stream = new MemoryStream();
        message.WriteTo(Wire, stream);
        return stream.ToArray();
    }
}
