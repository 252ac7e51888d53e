using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;
using Relay.Config;
using Relay.Delivery.Tests;

namespace Relay.Api.Tests;

/// <summary>HTTP in → spool → scheduler → MX lookup → SMTP out, through the whole relay (RelayHost).</summary>
public sealed class EndToEndTests : IAsyncLifetime
{
    private readonly TcpListener _portHolder = new(IPAddress.Loopback, 0);
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("relay-api-e2e-");
    private readonly TestDns _dns = new();
    private TestSmtpServer _mx = null!;
    private RelayHost _host = null!;

    public async Task InitializeAsync()
    {
        _portHolder.Start();
        var port = ((IPEndPoint)_portHolder.LocalEndpoint).Port;
        _mx = new TestSmtpServer(IPAddress.Parse("127.0.0.2"), port);
        _dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
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
        Assert.Equal("See attached.", message.TextBody.Trim());
        var parts = message.BodyParts.OfType<MimePart>().ToList();
        Assert.Equal(report, Decode(Assert.Single(parts, p => p.FileName == "report.bin")));
        var inline = Assert.Single(parts, p => p.ContentId == "logo@shop");
        Assert.Equal(logo, Decode(inline));
    }

    private static byte[] Decode(MimePart part)
    {
        var copy = new MemoryStream();
        part.Content.DecodeTo(copy);
        return copy.ToArray();
    }
}
