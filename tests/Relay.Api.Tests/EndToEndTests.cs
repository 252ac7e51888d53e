using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;
using Relay.Config;
using Relay.Delivery.Tests;

namespace Relay.Api.Tests;

/// <summary>
/// HTTP in → spool → scheduler → MX lookup → SMTP out, through the whole relay (RelayHost); delivery events reach the
/// client's webhook (a receiver on loopback) signed with its secret, and the status API.
/// </summary>
public sealed class EndToEndTests : IAsyncLifetime
{
    private readonly TcpListener _portHolder = new(IPAddress.Loopback, 0);
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("relay-api-e2e-");
    private const string Secret = "hook-secret";
    private readonly TestDns _dns = new();
    private readonly ConcurrentQueue<(string Signature, byte[] Body)> _hooks = new();
    private TestSmtpServer _mx = null!;
    private WebApplication _receiver = null!;
    private RelayHost _host = null!;

    public async Task InitializeAsync()
    {
        _portHolder.Start();
        var port = ((IPEndPoint)_portHolder.LocalEndpoint).Port;
        _mx = new TestSmtpServer(IPAddress.Parse("127.0.0.2"), port)
        {
            RcptReply = rcpt => rcpt.Contains("bad@", StringComparison.Ordinal) ? "550 5.1.1 no such user" : "250 2.1.5 Ok",
        };
        _dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        _receiver = builder.Build();
        _receiver.MapPost("/hook", async (HttpContext ctx) =>
        {
            using var body = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(body);
            _hooks.Enqueue((ctx.Request.Headers["X-Relay-Signature"].ToString(), body.ToArray()));
            return Results.Ok();
        });
        await _receiver.StartAsync();
        var hook = _receiver.Urls.First().Replace("localhost", "127.0.0.1", StringComparison.Ordinal) + "/hook";
        var toml = $$"""
            [server]
            hostname = "relay.example.test"
            [server.listener.smtp]
            bind = ["127.0.0.1:0"]
            [spool]
            path = "{{_dir.FullName}}/spool"
            [resolver]
            nameservers = ["{{_dns.EndPoint}}"]
            timeout = "2s"
            [delivery]
            port = {{port}}
            connect-timeout = "5s"
            [api]
            bind = "127.0.0.1:0"
            [api.client.shop]
            token = "shop-token"
            webhook = "{{hook}}"
            webhook-secret = "{{Secret}}"
            [queue.strategy]
            schedule = [ { if = "priority >= 6", then = "'urgent'" }, { else = "'default'" } ]
            [queue.schedule.urgent]
            retry = ["1s"]
            [queue.schedule.default]
            retry = ["1s"]
            [queue.virtual.urgent]
            threads-per-node = 4
            [queue.virtual.default]
            threads-per-node = 4
            """;
        var result = ConfigLoader.Parse(toml, "e2e.toml", _dir.FullName);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        var settings = result.Settings!;
        _host = await RelayHost.StartAsync(settings, StageFactory.CreateDeliveryAgent(settings, NullLoggerFactory.Instance),
            StageFactory.CreateReports(settings, NullLoggerFactory.Instance), NullLoggerFactory.Instance);
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        await _receiver.StopAsync();
        await _receiver.DisposeAsync();
        await _mx.DisposeAsync();
        await _dns.DisposeAsync();
        _portHolder.Stop();
        try { _dir.Delete(true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_json_submission_with_attachments_is_delivered_to_the_MX_and_parses_back_byte_equal()
    {
        var report = Enumerable.Range(0, 40_000).Select(i => (byte)(i % 251)).ToArray();
        var logo = Enumerable.Range(0, 700).Select(i => (byte)(255 - i % 256)).ToArray();
        var body = new JsonObject
        {
            ["from"] = "Shop <orders@shop.test>",
            ["to"] = "ann@remote.test",
            ["subject"] = "Report",
            ["text"] = "See attached.",
            ["html"] = "<p>See attached <img src=\"cid:logo@shop\"></p>",
            ["priority"] = "urgent",
            ["attachments"] = new JsonArray(
                new JsonObject { ["name"] = "report.bin", ["content-type"] = "application/octet-stream", ["content"] = Convert.ToBase64String(report) },
                new JsonObject { ["name"] = "logo.png", ["content-type"] = "image/png", ["content"] = Convert.ToBase64String(logo), ["content-id"] = "logo@shop" }),
        };
        Assert.NotNull(_host.Api);
        using var http = new HttpClient { BaseAddress = _host.Api!.BaseAddress };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "shop-token");
        using var response = await http.PostAsync("/api/v1/messages", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var id = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (_mx.Messages.IsEmpty)
        {
            Assert.True(DateTime.UtcNow < deadline, "not delivered to mx.remote.test in time");
            await Task.Delay(20);
        }
        var received = Assert.Single(_mx.Messages);
        Assert.StartsWith("MAIL FROM:<orders@shop.test>", received.MailFrom);
        Assert.StartsWith("RCPT TO:<ann@remote.test>", Assert.Single(received.RcptTo));
        var text = Encoding.ASCII.GetString(received.Content);
        Assert.StartsWith("Received: from shop ([127.0.0.1])", text);
        Assert.Contains("with HTTP id " + id, text);

        var message = MimeMessage.Load(new MemoryStream(received.Content));
        Assert.Equal("Report", message.Subject);
        Assert.Equal("See attached.", message.TextBody!.Trim());
        var parts = message.BodyParts.OfType<MimePart>().ToList();
        Assert.Equal(report, Decode(Assert.Single(parts, p => p.FileName == "report.bin")));
        var inline = Assert.Single(parts, p => p.ContentId == "logo@shop");
        Assert.Equal(logo, Decode(inline));
    }

    [Fact]
    public async Task Webhook_gets_each_event_signed_and_the_status_api_shows_each_recipient()
    {
        using var http = new HttpClient { BaseAddress = _host.Api!.BaseAddress };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "shop-token");
        var body = new JsonObject
        {
            ["from"] = "orders@shop.test",
            ["to"] = new JsonArray("ann@remote.test", "bad@remote.test"),
            ["subject"] = "Your order",
            ["text"] = "Shipped.",
        };
        using var response = await http.PostAsync("/api/v1/messages", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var id = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();

        // accepted, delivered (ann), failed + bounced (bad): the bounce DSN to shop.test is the relay's own mail.
        string[] expected = ["accepted", "delivered:ann@remote.test", "failed:bad@remote.test", "bounced:bad@remote.test"];
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        List<JsonNode> events;
        while (true)
        {
            events = _hooks.Select(h => JsonNode.Parse(h.Body)!).ToList();
            var seen = events.Select(Key).ToHashSet();
            if (expected.All(seen.Contains)) break;
            Assert.True(DateTime.UtcNow < deadline, "webhook got only: " + string.Join(", ", seen));
            await Task.Delay(25);
        }
        foreach (var (signature, raw) in _hooks)
        {
            var mac = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), raw));
            Assert.Equal(mac, signature);
        }
        Assert.All(events, e => Assert.Equal(id, e["messageId"]!.GetValue<string>()));
        Assert.All(events, e => Assert.Equal("shop", e["client"]!.GetValue<string>()));
        Assert.Equal("accepted", events[0]["type"]!.GetValue<string>());   // in log order
        var sequences = events.Select(e => e["sequence"]!.GetValue<long>()).ToList();
        Assert.Equal(sequences.Order(), sequences);

        using var status = await http.GetAsync($"/api/v1/messages/{id}");
        Assert.Equal(HttpStatusCode.OK, status.StatusCode);
        var view = JsonNode.Parse(await status.Content.ReadAsStringAsync())!;
        var recipients = view["recipients"]!.AsArray().ToDictionary(r => r!["address"]!.GetValue<string>());
        Assert.Equal("delivered", recipients["ann@remote.test"]!["state"]!.GetValue<string>());
        Assert.Equal("failed", recipients["bad@remote.test"]!["state"]!.GetValue<string>());
        Assert.Contains("550", recipients["bad@remote.test"]!["last-reply"]!.GetValue<string>());
        Assert.Equal(1, recipients["ann@remote.test"]!["attempts"]!.GetValue<int>());
    }

    private static string Key(JsonNode e)
    {
        var type = e["type"]!.GetValue<string>();
        return e["recipient"]?.GetValue<string>() is { } rcpt ? $"{type}:{rcpt}" : type;
    }

    private static byte[] Decode(MimePart part)
    {
        var copy = new MemoryStream();
        part.Content!.DecodeTo(copy);
        return copy.ToArray();
    }
}
