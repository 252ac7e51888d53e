// AdminClient: the HTTP side of `relay queue`: sends the token, returns status and body, and parses the
// same records the server writes.
using System.Net.Http.Headers;
using System.Text.Json;
using Relay.Admin.Api;

namespace Relay.Admin.Client;

public sealed record AdminReply(int Status, string Body)
{
    public bool Ok => Status is >= 200 and < 300;
    public T Parse<T>() => JsonSerializer.Deserialize<T>(Body, ApiJson.Options)
                           ?? throw new JsonException($"empty {typeof(T).Name} from the admin API");

    /// <summary>The <c>detail</c> (or <c>error</c>) of an error body, else the body itself.</summary>
    public string ErrorText()
    {
        try
        {
            var e = JsonSerializer.Deserialize<ErrorResponse>(Body, ApiJson.Options);
            if (e is not null) return e.Detail ?? e.Error;
        }
        catch (JsonException) { }
        return Body.Trim();
    }
}

public sealed class AdminClient(HttpClient http, Uri baseAddress, string token)
{
    public Uri BaseAddress { get; } = baseAddress;

    public Task<AdminReply> GetAsync(string pathAndQuery, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Get, pathAndQuery, cancellationToken);

    public async Task<AdminReply> SendAsync(HttpMethod method, string pathAndQuery, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, new Uri(BaseAddress, pathAndQuery));
        request.Headers.Add(AdminServer.TokenHeader, token);
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        using var response = await http.SendAsync(request, cancellationToken);
        return new AdminReply((int)response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken));
    }

    public static string MessagesPath(string? queue, string? domain, string? sender, string? status, int? limit, string? cursor)
    {
        var parts = new List<string>();
        void Add(string name, string? value)
        {
            if (!string.IsNullOrEmpty(value)) parts.Add($"{name}={Uri.EscapeDataString(value)}");
        }
        Add("queue", queue);
        Add("domain", domain);
        Add("sender", sender);
        Add("status", status);
        Add("limit", limit?.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Add("cursor", cursor);
        return parts.Count == 0 ? "api/messages" : "api/messages?" + string.Join('&', parts);
    }

    public static string MessagePath(string id) => "api/messages/" + Uri.EscapeDataString(id);
}
