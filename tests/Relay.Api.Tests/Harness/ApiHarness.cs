// ApiHarness: a real FileSpool in a temp folder, the real config loader and strategy, and an ApiServer on
// 127.0.0.1:0, driven with a real HttpClient.
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;
using Relay.Config;
using Relay.Config.Settings;
using Relay.Events;
using Relay.Spool;

namespace Relay.Api.Tests.Harness;

public sealed class ApiHarness : IAsyncDisposable
{
    public const string AppToken = "app-token-1234";
    public const string OtherToken = "other-token-5678";

    private readonly TimeProvider _clock;
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(30) };

    private ApiHarness(DirectoryInfo dir, RelaySettings settings, TimeProvider clock, RecordingEvents events)
    {
        Directory = dir;
        Settings = settings;
        _clock = clock;
        Events = events;
    }

    public DirectoryInfo Directory { get; }
    public RelaySettings Settings { get; }
    public RecordingEvents Events { get; }
    public FileSpool Spool { get; private set; } = null!;
    public ApiServer Server { get; private set; } = null!;
    public string TemplatesPath => Path.Combine(Directory.FullName, "templates");

    /// <summary>The test config: clients app (@app.test senders), other (hashed token), and <paramref name="extra"/> TOML.</summary>
    /// <param name="api">More keys of the <c>[api]</c> table itself (e.g. <c>max-batch-size</c>).</param>
    public static string Config(string dir, string extra = "", string api = "") => $$"""
        [server]
        hostname = "relay.example.test"
        [spool]
        path = "{{dir}}/spool"
        [api]
        bind = "127.0.0.1:0"
        max-batch = 5
        {{api}}
        [api.client.app]
        token = "{{AppToken}}"
        allowed-senders = ["@app.test", "bounces@mail.app.test"]
        [api.client.other]
        token = "sha256:{{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(OtherToken)))}}"
        [templates]
        path = "{{dir}}/templates"
        {{extra}}
        [queue.strategy]
        schedule = [ { if = "source == 'dsn'", then = "'dsn'" },
                     { if = "priority >= 6", then = "'urgent'" },
                     { if = "header('X-Kind') == 'otp'", then = "'urgent'" },
                     { if = "source == 'api' && authenticated_as == 'other'", then = "'other'" },
                     { else = "'default'" } ]
        [queue.schedule.urgent]
        retry = ["1s"]
        [queue.schedule.default]
        retry = ["1s"]
        [queue.schedule.other]
        queue-name = "default"
        retry = ["1s"]
        [queue.schedule.dsn]
        retry = ["1s"]
        max-attempts = 2
        [queue.virtual.urgent]
        threads-per-node = 4
        [queue.virtual.default]
        threads-per-node = 4
        [queue.virtual.dsn]
        threads-per-node = 1
        """;

    /// <summary>Passed to <see cref="ApiServer.QueueHasRoom"/>.</summary>
    public Func<string, bool>? QueueHasRoom { get; set; }

    public static async Task<ApiHarness> StartAsync(string extra = "", TimeProvider? clock = null, Func<string, bool>? queueHasRoom = null,
                                                    string api = "")
    {
        var dir = System.IO.Directory.CreateTempSubdirectory("relay-api-");
        System.IO.Directory.CreateDirectory(Path.Combine(dir.FullName, "templates"));
        var result = ConfigLoader.Parse(Config(dir.FullName, extra, api), "api.toml", dir.FullName);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        var h = new ApiHarness(dir, result.Settings!, clock ?? TimeProvider.System, new RecordingEvents()) { QueueHasRoom = queueHasRoom };
        await h.OpenAsync();
        return h;
    }

    private async Task OpenAsync()
    {
        Spool = FileSpool.Open(Settings.Spool, _clock);
        Events.Spool = Spool;
        Server = new ApiServer(Settings.Api, Settings.Server.Hostname, Spool, Settings.Queue.Strategy.Classify, Events, Events, _clock,
            NullLoggerFactory.Instance) { QueueHasRoom = QueueHasRoom };
        await Server.StartAsync(CancellationToken.None);
    }

    /// <summary>Stops server and spool and opens both again on the same folder (a restart).</summary>
    public async Task RestartAsync()
    {
        await Server.DisposeAsync();
        await Spool.DisposeAsync();
        await OpenAsync();
    }

    public Uri Url(string path) => new(Server.BaseAddress, path);

    public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string? token, string? json = null,
                                                     string? idempotencyKey = null, string contentType = "application/json")
    {
        using var request = new HttpRequestMessage(method, Url(path));
        if (token is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        if (idempotencyKey is not null) request.Headers.Add("Idempotency-Key", idempotencyKey);
        if (json is not null) request.Content = new StringContent(json, Encoding.UTF8, contentType);
        return await _http.SendAsync(request);
    }

    public Task<HttpResponseMessage> PostAsync(object body, string? token = AppToken, string? idempotencyKey = null) =>
        SendAsync(HttpMethod.Post, "/api/v1/messages", token, body as string ?? JsonSerializer.Serialize(body), idempotencyKey);

    /// <summary>Posts and asserts 202; returns the queue id.</summary>
    public async Task<string> SubmitAsync(object body, string? token = AppToken, string? idempotencyKey = null)
    {
        using var response = await PostAsync(body, token, idempotencyKey);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Accepted, $"{(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text)!["id"]!.GetValue<string>();
    }

    public static async Task<JsonNode> JsonAsync(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    public async Task<MimeMessage> LoadAsync(string id)
    {
        await using var content = await Spool.OpenContentAsync(id, CancellationToken.None);
        return await MimeMessage.LoadAsync(content);
    }

    public async Task<byte[]> BytesAsync(string id)
    {
        await using var content = await Spool.OpenContentAsync(id, CancellationToken.None);
        var copy = new MemoryStream();
        await content.CopyToAsync(copy);
        return copy.ToArray();
    }

    public Task<MessageEnvelope> EnvelopeAsync(string id) => Spool.ReadEnvelopeAsync(id, CancellationToken.None).AsTask();

    /// <summary>
    /// Messages the spool holds plus message files on disk (a big message's file exists before its commit):
    /// proves a refused request left nothing behind.
    /// </summary>
    public int StoredMessages => Spool.Count + System.IO.Directory.EnumerateFiles(Path.Combine(Settings.Spool.Path, "msg"), "*", SearchOption.AllDirectories).Count();

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        await Server.DisposeAsync();
        await Spool.DisposeAsync();
        try { Directory.Delete(true); } catch (IOException) { }
    }
}

/// <summary>Records accepted events (and checks each message was durable first); answers status from a dictionary.</summary>
public sealed class RecordingEvents : IAcceptedMessages, IMessageStatusSource
{
    public FileSpool? Spool { get; set; }
    public System.Collections.Concurrent.ConcurrentQueue<MessageEnvelope> Accepted { get; } = new();
    public System.Collections.Concurrent.ConcurrentDictionary<string, MessageStatusView> Views { get; } = new();
    public int NotYetDurable;
    /// <summary>Makes <see cref="MessageAcceptedAsync"/> throw (the event log could not be written).</summary>
    public bool FailAccepted { get; set; }

    public ValueTask MessageAcceptedAsync(MessageEnvelope envelope, CancellationToken cancellationToken)
    {
        if (FailAccepted) throw new IOException("event log: disk full");
        if (Spool?.Find(envelope.Id) is null) Interlocked.Increment(ref NotYetDurable);
        Accepted.Enqueue(envelope);
        return ValueTask.CompletedTask;
    }

    public ValueTask<MessageStatusView?> FindAsync(string messageId, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Views.TryGetValue(messageId, out var v) ? v : null);
}
