// EventRecords: what one frame of the event log holds. An event record is the public DeliveryEvent plus what the
// status view needs later (the recipient's index; for "accepted", the sender, priority and every recipient with
// its schedule and queue), so a finished message's status is rebuilt from the log alone. A purge record lists
// the message ids whose retention ended (a tombstone, so replay does not bring them back).
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Relay.Events;

internal sealed class StoredEvent
{
    public long Seq { get; set; }
    public string Type { get; set; } = "";
    public string Msg { get; set; } = "";
    public string Client { get; set; } = "";
    /// <summary>Index of the recipient in the envelope; −1 for message-level events (accepted).</summary>
    public int Rcpt { get; set; } = -1;
    public string? Address { get; set; }
    public DateTimeOffset At { get; set; }
    public int Attempt { get; set; }
    public int Code { get; set; }
    public string? Status { get; set; }
    public string? Text { get; set; }
    public string? Host { get; set; }
    // "accepted" only
    public string? Sender { get; set; }
    public int Priority { get; set; }
    public List<StoredRecipient>? Rcpts { get; set; }

    public bool IsFinal => Type is DeliveryEventType.Delivered or DeliveryEventType.Failed or DeliveryEventType.Expired;

    public DeliveryEvent ToPublic() => new(Seq, Type, Msg, Client, Address, At, Attempt, Code, Status, Text, Host);
}

internal sealed record StoredRecipient(string Address, string Schedule, string Queue);

[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(StoredEvent))]
[JsonSerializable(typeof(List<string>))]
internal sealed partial class EventRecordJson : JsonSerializerContext;

/// <summary>Payload = one type byte + UTF-8 JSON (readable with <c>strings</c>, stable across versions).</summary>
internal static class EventRecords
{
    public const byte KindEvent = 1, KindPurge = 2;

    public static byte[] Event(StoredEvent e) => WithKind(KindEvent, JsonSerializer.SerializeToUtf8Bytes(e, EventRecordJson.Default.StoredEvent));

    public static byte[] Purge(List<string> ids) => WithKind(KindPurge, JsonSerializer.SerializeToUtf8Bytes(ids, EventRecordJson.Default.ListString));

    public static bool KnownKind(byte kind) => kind is KindEvent or KindPurge;

    public static StoredEvent ReadEvent(ReadOnlySpan<byte> payload) =>
        JsonSerializer.Deserialize(payload[1..], EventRecordJson.Default.StoredEvent) ?? throw new InvalidDataException("null event");

    public static List<string> ReadPurge(ReadOnlySpan<byte> payload) =>
        JsonSerializer.Deserialize(payload[1..], EventRecordJson.Default.ListString) ?? [];

    private static byte[] WithKind(byte kind, byte[] json)
    {
        var payload = new byte[json.Length + 1];
        payload[0] = kind;
        json.CopyTo(payload, 1);
        return payload;
    }

    /// <summary>"450 4.2.0 text" (the code is left out when there was no SMTP reply).</summary>
    public static string? Reply(StoredEvent e)
    {
        if (e.Code == 0 && e.Status is null && e.Text is null) return null;
        var sb = new StringBuilder();
        if (e.Code != 0) sb.Append(e.Code);
        if (e.Status is not null) { if (sb.Length > 0) sb.Append(' '); sb.Append(e.Status); }
        if (e.Text is not null) { if (sb.Length > 0) sb.Append(' '); sb.Append(e.Text); }
        return sb.ToString();
    }
}
