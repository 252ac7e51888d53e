// Through RelayHost: what an operator does to an API-submitted message reaches the client's status API and webhook
// (review #4: a requeued dead letter that is then delivered shows delivered; #11c: a cancel without bounce is final).
using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Relay.Delivery.Tests;
using Relay.Scheduler;

namespace Relay.EndToEnd.Tests;

public sealed class ApiOperatorEndToEndTests : IAsyncLifetime
{
    private readonly RelayWorld _world = new();
    private readonly ConcurrentQueue<JsonNode> _hooks = new();
    private TestSmtpServer _mx = null!;
    private WebApplication _receiver = null!;
    private RelayHost _host = null!;
    private HttpClient _http = null!;

    public async Task InitializeAsync()
    {
        _mx = _world.Remote("127.0.0.2");
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        _receiver = builder.Build();
        _receiver.MapPost("/hook", async (HttpContext ctx) =>
        {
            using var body = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(body);
            _hooks.Enqueue(JsonNode.Parse(body.ToArray())!);
            return Results.Ok();
        });
        await _receiver.StartAsync();
        var hook = _receiver.Urls.First().Replace("localhost", "127.0.0.1", StringComparison.Ordinal) + "/hook";

        // Retries an hour apart: a deferred or dead message stays as the test leaves it.
        _host = await _world.StartAsync($$"""
            [server]
            hostname = "relay.example.test"
            [server.listener.smtp]
            bind = ["127.0.0.1:0"]
            [spool]
            path = "{{_world.Directory.FullName}}/spool"
            [resolver]
            nameservers = ["{{_world.Dns.EndPoint}}"]
            timeout = "2s"
            [delivery]
            port = {{_world.RemotePort}}
            connect-timeout = "5s"
            [api]
            bind = "127.0.0.1:0"
            [api.client.shop]
            token = "shop-token"
            webhook = "{{hook}}"
            webhook-secret = "hook-secret"
            [queue.strategy]
            schedule = [ { else = "'default'" } ]
            [queue.schedule.default]
            retry = ["1h"]
            [queue.virtual.default]
            threads-per-node = 4
            """);
        _http = new HttpClient { BaseAddress = _host.Api!.BaseAddress };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "shop-token");
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _world.DisposeAsync();
        await _receiver.StopAsync();
        await _receiver.DisposeAsync();
    }

    private async Task<string> SubmitAsync(string to)
    {
        var body = new JsonObject { ["from"] = "orders@shop.test", ["to"] = new JsonArray(to), ["subject"] = "Order", ["text"] = "Shipped." };
        using var response = await _http.PostAsync("/api/v1/messages", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
    }

    private async Task<JsonNode> StatusAsync(string id)
    {
        using var status = await _http.GetAsync($"/api/v1/messages/{id}");
        Assert.Equal(HttpStatusCode.OK, status.StatusCode);
        return JsonNode.Parse(await status.Content.ReadAsStringAsync())!;
    }

    private async Task WaitForHookAsync(string id, string type)
    {
        await RelayWorld.WaitUntil(() => _hooks.Any(h => h["messageId"]!.GetValue<string>() == id && h["type"]!.GetValue<string>() == type),
            TimeSpan.FromSeconds(20), $"webhook event {type} for {id}");
    }

    [Fact]
    public async Task A_requeued_dead_letter_that_is_then_delivered_shows_delivered_in_status_and_webhook()
    {
        _mx.RcptReply = _ => "550 5.1.1 no such user";
        var id = await SubmitAsync("ann@remote.test");
        await WaitForHookAsync(id, "failed");
        await RelayWorld.WaitUntil(() => _host.Spool.Find(id)?.FinalizedAt is not null, TimeSpan.FromSeconds(20), "a dead letter");

        _mx.RcptReply = _ => "250 2.1.5 Ok";
        // What the admin API's retry does. The spool records the dead letter a moment before the scheduler frees
        // its delivery slot; the retry waits that moment out (CI once caught it answering "try again" here).
        var result = await _host.Scheduler.RetryAsync(id, CancellationToken.None);
        Assert.Equal(ControlOutcome.Done, result.Outcome);
        await WaitForHookAsync(id, "delivered");

        var view = await StatusAsync(id);
        var rcpt = view["recipients"]!.AsArray().Single()!;
        Assert.Equal("delivered", rcpt["state"]!.GetValue<string>());
        Assert.Equal(1, rcpt["attempts"]!.GetValue<int>());
        Assert.NotNull(view["finished-at"]);
        var types = _hooks.Where(h => h["messageId"]!.GetValue<string>() == id).Select(h => h["type"]!.GetValue<string>()).ToList();
        Assert.Equal(["accepted", "failed", "bounced", "requeued", "delivered"], types);
    }

    [Fact]
    public async Task A_cancel_without_bounce_is_a_final_failed_event_in_status_and_webhook()
    {
        _mx.RcptReply = _ => "451 4.7.1 greylisted";
        var id = await SubmitAsync("bob@remote.test");
        await WaitForHookAsync(id, "deferred");

        var result = await _host.Scheduler.CancelAsync(id, bounce: false, CancellationToken.None);
        Assert.Equal(ControlOutcome.Done, result.Outcome);
        await WaitForHookAsync(id, "failed");

        var view = await StatusAsync(id);
        Assert.Equal("failed", view["recipients"]!.AsArray().Single()!["state"]!.GetValue<string>());
        Assert.NotNull(view["finished-at"]);
        var failed = _hooks.Single(h => h["messageId"]!.GetValue<string>() == id && h["type"]!.GetValue<string>() == "failed");
        Assert.Equal("cancelled by the operator", failed["text"]!.GetValue<string>());
    }
}
