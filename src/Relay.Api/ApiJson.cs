// ApiJson: the wire shapes of /api/v1 (kebab-case names, as issue #10 spells the fields: reply-to, mail-from,
// rcpt-to, content-type, content-id) and the JSON options that read and write them.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Relay.Api;

internal static class ApiJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.KebabCaseLower,
        DictionaryKeyPolicy = null,   // header names and template variables stay as written
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        PropertyNameCaseInsensitive = false,
        AllowTrailingCommas = false,
        ReadCommentHandling = JsonCommentHandling.Disallow,
        MaxDepth = 32,
    };

    public const string ProblemContentType = "application/problem+json";
}

/// <summary>The body of <c>POST /api/v1/messages</c> (one item of a batch).</summary>
public sealed record MessageRequest
{
    /// <summary>Author (<c>From:</c>), <c>"Name &lt;addr&gt;"</c> or <c>addr</c>. Also the envelope sender unless <c>envelope.mail-from</c> is set.</summary>
    public string? From { get; init; }
    /// <summary>One address or a list.</summary>
    [JsonConverter(typeof(OneOrManyConverter))] public List<string>? To { get; init; }
    [JsonConverter(typeof(OneOrManyConverter))] public List<string>? Cc { get; init; }
    /// <summary>Envelope recipients only; never written into the headers.</summary>
    [JsonConverter(typeof(OneOrManyConverter))] public List<string>? Bcc { get; init; }
    [JsonConverter(typeof(OneOrManyConverter))] public List<string>? ReplyTo { get; init; }
    public string? Subject { get; init; }
    /// <summary>text/plain body.</summary>
    public string? Text { get; init; }
    /// <summary>text/html body; with <c>text</c> the message is multipart/alternative.</summary>
    public string? Html { get; init; }
    /// <summary>Extra header fields (name → value). Fields Relay builds from other members are refused.</summary>
    public Dictionary<string, string>? Headers { get; init; }
    public List<AttachmentRequest>? Attachments { get; init; }
    /// <summary><c>urgent</c>, <c>high</c>, <c>normal</c>, <c>low</c>, <c>bulk</c> or an integer −9..9 (DESIGN.md priority model).</summary>
    public JsonElement? Priority { get; init; }
    public EnvelopeRequest? Envelope { get; init; }
    /// <summary>RFC 3461 NOTIFY for every recipient: <c>never</c>, or any of <c>success</c>, <c>failure</c>, <c>delay</c>.</summary>
    [JsonConverter(typeof(OneOrManyConverter))] public List<string>? Notify { get; init; }
    /// <summary>RFC 3461 RET: <c>full</c> or <c>hdrs</c>.</summary>
    public string? Ret { get; init; }
    /// <summary>RFC 3461 ENVID.</summary>
    public string? Envid { get; init; }
    /// <summary>Name of a template in <c>[templates] path</c>; replaces subject/text/html.</summary>
    public string? Template { get; init; }
    /// <summary>Variables for the template.</summary>
    public Dictionary<string, JsonElement>? Vars { get; init; }

    /// <summary>Members the schema does not know (each is reported as a 400 error).</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Unknown { get; init; }
}

public sealed record AttachmentRequest
{
    public string? Name { get; init; }
    /// <summary>MIME type, default <c>application/octet-stream</c>.</summary>
    public string? ContentType { get; init; }
    /// <summary>The bytes, base64.</summary>
    public string? Content { get; init; }
    /// <summary>Makes the attachment inline (<c>cid:</c> reference from the html).</summary>
    public string? ContentId { get; init; }
    [JsonExtensionData] public Dictionary<string, JsonElement>? Unknown { get; init; }
}

public sealed record EnvelopeRequest
{
    public string? MailFrom { get; init; }
    [JsonConverter(typeof(OneOrManyConverter))] public List<string>? RcptTo { get; init; }
    [JsonExtensionData] public Dictionary<string, JsonElement>? Unknown { get; init; }
}

/// <summary>202 answer: the queue id and how many recipients were queued.</summary>
public sealed record AcceptedResponse(string Id, int Recipients)
{
    /// <summary>Set when the client's rate holds the message: no delivery attempt before this time.</summary>
    public DateTimeOffset? NotBefore { get; init; }
}

/// <summary>One item of a batch answer: status plus either id/recipients or the problem.</summary>
public sealed record BatchItemResult(int Index, int Status, string? Id, int? Recipients, ProblemResponse? Problem)
{
    public DateTimeOffset? NotBefore { get; init; }
}

public sealed record BatchResponse(IReadOnlyList<BatchItemResult> Results);

/// <summary>RFC 9457 problem details, with <c>errors</c> per field name for 400s.</summary>
public sealed record ProblemResponse(string Type, string Title, int Status, string? Detail,
    IReadOnlyDictionary<string, string[]>? Errors = null);

public sealed record TemplateView(string Name, bool Subject, bool Text, bool Html);

public sealed record TemplatesResponse(IReadOnlyList<TemplateView> Templates);

/// <summary>Reads either a JSON string or an array of strings into a list.</summary>
internal sealed class OneOrManyConverter : JsonConverter<List<string>>
{
    public override List<string>? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.Null: return null;
            case JsonTokenType.String: return [reader.GetString()!];
            case JsonTokenType.StartArray:
                var list = new List<string>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    if (reader.TokenType != JsonTokenType.String) throw new JsonException("expected a string or a list of strings");
                    list.Add(reader.GetString()!);
                }
                return list;
            default:
                throw new JsonException("expected a string or a list of strings");
        }
    }

    public override void Write(Utf8JsonWriter writer, List<string> value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        foreach (var s in value) writer.WriteStringValue(s);
        writer.WriteEndArray();
    }
}
