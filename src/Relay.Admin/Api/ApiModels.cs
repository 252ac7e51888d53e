// ApiModels: the JSON shapes of DESIGN.md "Admin API" (snake_case, times ISO 8601 UTC). The same records are
// read back by the `relay queue` client, so the server and the CLI cannot drift apart.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Relay.Admin.Api;

public static class ApiJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    /// <summary>UTC with a Z, second precision or better (ISO 8601).</summary>
    public static DateTime? Utc(DateTimeOffset? t) => t?.UtcDateTime;
    public static DateTime Utc(DateTimeOffset t) => t.UtcDateTime;
}

public sealed record QueuesResponse(IReadOnlyList<QueueView> Queues);

public sealed record QueueView(
    string Name,
    long Depth,
    int InFlight,
    int ThreadsPerNode,
    long? MaxSize,
    double? OldestAgeSeconds,
    LatencyView LatencySeconds,
    double? SlaSeconds,
    long SlaViolations,
    bool? SlaMet,
    int LatencySamples);

/// <summary>Null values: no delivery in the window yet.</summary>
public sealed record LatencyView(double? P50, double? P95, double? P99);

public sealed record MessagesResponse(IReadOnlyList<MessageView> Messages, string? Next);

/// <param name="Status">pending (some recipient still queued), failed (a dead letter: final, some failed or
/// expired), delivered (final, all delivered).</param>
/// <param name="Reason">For dead letters: why (the first failed recipient's last error).</param>
public sealed record MessageView(
    string Id,
    string Sender,
    long Size,
    int Priority,
    DateTime ArrivedAt,
    string Status,
    string Source,
    DateTime? FinalizedAt,
    DateTime? RetainedUntil,
    string? Reason,
    IReadOnlyList<RecipientView> Recipients);

public sealed record RecipientView(
    string Address,
    string Status,
    string Schedule,
    string Queue,
    int Attempts,
    DateTime? NextAttemptAt,
    string? LastError,
    string? RemoteHost);

/// <summary><c>/api/messages/{id}</c>: the message plus what this process saw happen to it.</summary>
public sealed record MessageDetail(
    string Id,
    string Sender,
    long Size,
    int Priority,
    DateTime ArrivedAt,
    string Status,
    string Source,
    DateTime? FinalizedAt,
    DateTime? RetainedUntil,
    string? Reason,
    IReadOnlyList<RecipientView> Recipients,
    string? EnvelopeId,
    string? RemoteIp,
    string? HeloName,
    string? AuthenticatedAs,
    IReadOnlyList<AttemptView> Attempts,
    IReadOnlyList<DsnView> Dsns,
    [property: JsonPropertyName("history_since_start")] bool HistorySinceStart = true);

public sealed record AttemptView(
    DateTime At, string Recipient, string Queue, int Attempt, string Result, int Code, string Status, string Text, string? RemoteHost);

public sealed record DsnView(DateTime At, string Kind, IReadOnlyList<string> Recipients);

public sealed record ActionResponse(string Id, string Action, int Recipients, string? RequeuedAs = null, bool? Bounced = null);

public sealed record ErrorResponse(string Error, string? Detail = null);

public sealed record ReloadResponse(bool Ok, string? Summary, IReadOnlyList<ReloadErrorView> Errors);

public sealed record ReloadErrorView(string File, int Line, string Key, string Message);
