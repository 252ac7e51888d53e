// RequestValidator: a MessageRequest → a ValidatedMessage, or every problem with the field it is about.
// Nothing here touches the spool: a request with any problem queues nothing.
using System.Text.Json;
using MimeKit;
using Relay.Api.Templates;
using Relay.Config.Settings;
using Relay.Spool;

namespace Relay.Api.Submission;

/// <summary>Problems of one request, per field name (RFC 9457 <c>errors</c>).</summary>
internal sealed class ProblemList
{
    private readonly Dictionary<string, List<string>> _errors = new(StringComparer.Ordinal);

    public bool Any => _errors.Count > 0;

    public void Add(string field, string message)
    {
        if (!_errors.TryGetValue(field, out var list)) _errors[field] = list = [];
        list.Add(message);
    }

    public IReadOnlyDictionary<string, string[]> ToDictionary() => _errors.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
}

internal sealed record ValidatedAttachment(string Name, ContentType ContentType, byte[] Content, string? ContentId);

/// <summary>A request that passed every check, ready to be built into MIME.</summary>
internal sealed record ValidatedMessage(
    MailboxAddress From,
    IReadOnlyList<MailboxAddress> To,
    IReadOnlyList<MailboxAddress> Cc,
    IReadOnlyList<MailboxAddress> ReplyTo,
    string? Subject,
    string? Text,
    string? Html,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    IReadOnlyList<ValidatedAttachment> Attachments,
    int Priority,
    string MailFrom,
    IReadOnlyList<string> Recipients,
    DsnNotify Notify,
    DsnReturn Return,
    string? EnvelopeId);

internal static class RequestValidator
{
    public const int MaxRecipients = 1000;
    public const string PriorityHeader = "X-Message-Priority";

    /// <summary>Header fields built from request members or by Relay itself; refused in <c>headers</c>.</summary>
    private static readonly HashSet<string> Reserved = new(StringComparer.OrdinalIgnoreCase)
    {
        "From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version",
        "Received", "Return-Path", "Sender",
        // Trace and authentication results are added by the MTAs that check them: a client must not forge them.
        "Authentication-Results", "Received-SPF",
    };

    /// <summary>Reserved header families (RFC 8617 ARC-*, RFC 5322 Resent-*), by prefix.</summary>
    private static readonly string[] ReservedPrefixes = ["Content-", "ARC-", "Resent-"];

    public static async ValueTask<ValidatedMessage?> ValidateAsync(MessageRequest request, ApiClientSettings client,
        TemplateStore templates, ProblemList problems, CancellationToken cancellationToken)
    {
        foreach (var name in request.Unknown?.Keys ?? Enumerable.Empty<string>()) problems.Add(name, "unknown field");

        var from = Mailbox(request.From, "from", problems, required: true);
        var to = Mailboxes(request.To, "to", problems);
        var cc = Mailboxes(request.Cc, "cc", problems);
        var bcc = Mailboxes(request.Bcc, "bcc", problems);
        var replyTo = Mailboxes(request.ReplyTo, "reply-to", problems);

        // Content: literal subject/text/html, or a template that renders them.
        var subject = request.Subject;
        var text = request.Text;
        var html = request.Html;
        if (request.Template is { } template)
        {
            if (request.Text is not null) problems.Add("text", "cannot be combined with template (the template renders the body)");
            if (request.Html is not null) problems.Add("html", "cannot be combined with template (the template renders the body)");
            var rendered = await templates.RenderAsync(template, request.Vars, problems, cancellationToken);
            if (rendered is not null)
            {
                subject = rendered.Subject ?? subject;
                text = rendered.Text;
                html = rendered.Html;
            }
        }
        else
        {
            if (request.Vars is not null) problems.Add("vars", "only used with template");
            if (text is null && html is null) problems.Add("text", "a message needs text, html or template");
        }
        if (subject is not null && subject.AsSpan().IndexOfAny('\r', '\n') >= 0) problems.Add("subject", "must be one line");

        var headers = Headers(request.Headers, problems);
        var attachments = Attachments(request.Attachments, problems);
        var priority = Priority(request, headers, client, problems);

        // Envelope: mail-from defaults to the author, rcpt-to to every to/cc/bcc address.
        var mailFrom = from?.Address;
        var rcptTo = to.Concat(cc).Concat(bcc).Select(m => m.Address).ToList();
        if (request.Envelope is { } envelope)
        {
            foreach (var name in envelope.Unknown?.Keys ?? Enumerable.Empty<string>()) problems.Add($"envelope.{name}", "unknown field");
            if (envelope.MailFrom is not null)
                mailFrom = EnvelopeAddress(envelope.MailFrom, "envelope.mail-from", problems);
            if (envelope.RcptTo is not null)
            {
                rcptTo = [];
                for (var i = 0; i < envelope.RcptTo.Count; i++)
                    if (EnvelopeAddress(envelope.RcptTo[i], $"envelope.rcpt-to[{i}]", problems) is { } a) rcptTo.Add(a);
            }
        }
        rcptTo = rcptTo.Distinct(StringComparer.OrdinalIgnoreCase).ToList();
        if (rcptTo.Count == 0 && !problems.Any) problems.Add("to", "a message needs at least one recipient (to, cc, bcc or envelope.rcpt-to)");
        if (rcptTo.Count > MaxRecipients) problems.Add("to", $"at most {MaxRecipients} recipients per message");

        var notify = Notify(request.Notify, problems);
        var ret = request.Ret?.ToLowerInvariant() switch
        {
            null => DsnReturn.Unspecified,
            "full" => DsnReturn.Full,
            "hdrs" => DsnReturn.Headers,
            _ => Invalid(problems, "ret", "must be \"full\" or \"hdrs\" (RFC 3461 RET)", DsnReturn.Unspecified),
        };
        if (request.Envid is { } envid && (envid.Length is 0 or > 100 || envid.Any(c => c is < '!' or > '~')))
            problems.Add("envid", "must be 1 to 100 printable ASCII characters without spaces (RFC 3461 ENVID)");

        if (problems.Any || from is null || mailFrom is null) return null;
        return new ValidatedMessage(from, to, cc, replyTo, subject, text, html, headers, attachments, priority,
            mailFrom, rcptTo, notify, ret, request.Envid);
    }

    private static T Invalid<T>(ProblemList problems, string field, string message, T value)
    {
        problems.Add(field, message);
        return value;
    }

    private static MailboxAddress? Mailbox(string? text, string field, ProblemList problems, bool required)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            if (required) problems.Add(field, "required: an address like \"App <noreply@app.example>\"");
            return null;
        }
        if (MailboxAddress.TryParse(ParserOptions.Default, text, out var mailbox) && IsAddress(mailbox.Address)) return mailbox;
        problems.Add(field, $"'{Shorten(text)}' is not an email address");
        return null;
    }

    private static List<MailboxAddress> Mailboxes(List<string>? list, string field, ProblemList problems)
    {
        var result = new List<MailboxAddress>();
        for (var i = 0; i < (list?.Count ?? 0); i++)
            if (Mailbox(list![i], $"{field}[{i}]", problems, required: true) is { } m) result.Add(m);
        return result;
    }

    /// <summary>An envelope address: a bare <c>local@domain</c>, no display name or brackets.</summary>
    private static string? EnvelopeAddress(string text, string field, ProblemList problems)
    {
        var trimmed = text.Trim();
        if (IsAddress(trimmed) && MailboxAddress.TryParse(ParserOptions.Default, trimmed, out var m) && m.Address == trimmed) return trimmed;
        problems.Add(field, $"'{Shorten(text)}' is not a bare address like user@example.org");
        return null;
    }

    private static bool IsAddress(string address)
    {
        var at = address.LastIndexOf('@');
        return at > 0 && at < address.Length - 1 && address.Length <= 254
               && !address.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c is '<' or '>' or ',' or ';');
    }

    private static List<KeyValuePair<string, string>> Headers(Dictionary<string, string>? headers, ProblemList problems)
    {
        var result = new List<KeyValuePair<string, string>>();
        foreach (var (name, value) in headers ?? [])
        {
            var field = $"headers.{name}";
            if (name.Length == 0 || name.Any(c => c is <= ' ' or > '~' or ':'))
                problems.Add(field, "not a header field name (printable ASCII, no spaces or colons)");
            else if (Reserved.Contains(name) || ReservedPrefixes.Any(p => name.StartsWith(p, StringComparison.OrdinalIgnoreCase)))
                problems.Add(field, "set by Relay or by its own field of the request, not in headers");
            else if (value is null || value.AsSpan().IndexOfAny('\r', '\n') >= 0 || value.Length > 998)
                problems.Add(field, "a header value is one line of at most 998 characters");
            else result.Add(new(name, value));
        }
        return result;
    }

    private static List<ValidatedAttachment> Attachments(List<AttachmentRequest>? list, ProblemList problems)
    {
        var result = new List<ValidatedAttachment>();
        for (var i = 0; i < (list?.Count ?? 0); i++)
        {
            var a = list![i];
            var field = $"attachments[{i}]";
            if (a is null) { problems.Add(field, "expected an object"); continue; }
            foreach (var name in a.Unknown?.Keys ?? Enumerable.Empty<string>()) problems.Add($"{field}.{name}", "unknown field");
            var ok = true;
            if (string.IsNullOrWhiteSpace(a.Name) || a.Name.AsSpan().IndexOfAny('\r', '\n') >= 0)
            { problems.Add($"{field}.name", "required: the file name"); ok = false; }
            var type = new ContentType("application", "octet-stream");
            if (a.ContentType is not null && (!ContentType.TryParse(a.ContentType, out type!) || type.MediaType.Length == 0 || type.MediaSubtype.Length == 0))
            { problems.Add($"{field}.content-type", $"'{Shorten(a.ContentType)}' is not a MIME type like \"application/pdf\""); ok = false; }
            byte[] bytes = [];
            if (a.Content is null) { problems.Add($"{field}.content", "required: the bytes, base64"); ok = false; }
            else
            {
                try { bytes = Convert.FromBase64String(a.Content); }
                catch (FormatException) { problems.Add($"{field}.content", "not valid base64"); ok = false; }
            }
            var cid = a.ContentId?.Trim().TrimStart('<').TrimEnd('>');
            if (cid is not null && (cid.Length == 0 || cid.Any(c => c is <= ' ' or > '~' or '<' or '>')))
            { problems.Add($"{field}.content-id", "not a content id like \"logo@app\""); ok = false; }
            if (ok) result.Add(new ValidatedAttachment(a.Name!, type, bytes, cid));
        }
        return result;
    }

    /// <summary>The priority field, else an <c>X-Message-Priority</c> in headers (authenticated, so honoured), else the client's default.</summary>
    private static int Priority(MessageRequest request, List<KeyValuePair<string, string>> headers, ApiClientSettings client, ProblemList problems)
    {
        if (request.Priority is { } p && p.ValueKind != JsonValueKind.Null)
        {
            var text = p.ValueKind switch
            {
                JsonValueKind.String => p.GetString(),
                JsonValueKind.Number => p.GetRawText(),
                _ => null,
            };
            if (PriorityNames.TryParse(text, out var n)) return n;
            problems.Add("priority", "must be urgent, high, normal, low, bulk or an integer -9..9");
            return client.DefaultPriority;
        }
        foreach (var (name, value) in headers)
            if (name.Equals(PriorityHeader, StringComparison.OrdinalIgnoreCase) && PriorityNames.TryParse(value, out var h)) return h;
        return client.DefaultPriority;
    }

    private static DsnNotify Notify(List<string>? values, ProblemList problems)
    {
        if (values is null) return DsnNotify.Default;
        var notify = DsnNotify.Default;
        foreach (var raw in values.SelectMany(v => v.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)))
        {
            notify |= raw.ToLowerInvariant() switch
            {
                "never" => DsnNotify.Never,
                "success" => DsnNotify.Success,
                "failure" => DsnNotify.Failure,
                "delay" => DsnNotify.Delay,
                _ => Invalid(problems, "notify", $"'{Shorten(raw)}' is not never, success, failure or delay", DsnNotify.Default),
            };
        }
        if (notify.HasFlag(DsnNotify.Never) && notify != DsnNotify.Never) problems.Add("notify", "never cannot be combined with other values (RFC 3461)");
        if (values.Count > 0 && notify == DsnNotify.Default && !problems.Any) problems.Add("notify", "empty: leave it out for the default (failure, delay)");
        return notify;
    }

    private static string Shorten(string text) => text.Length <= 80 ? text : text[..80] + "…";
}
