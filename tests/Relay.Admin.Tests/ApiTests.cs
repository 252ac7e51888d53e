// ApiTests: every admin route over HTTP against a real spool and scheduler: the token, the JSON shapes,
// filters and paging, the dead-letter view, retry, cancel and reload.
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Relay.Admin.Api;
using Relay.Admin.Tests.Harness;
using Relay.Config;
using Relay.Spool;

namespace Relay.Admin.Tests;

public sealed class ApiTests : IAsyncLifetime
{
    private AdminHarness _h = null!;

    public async Task InitializeAsync() => _h = await AdminHarness.StartAsync();
    public async Task DisposeAsync() => await _h.DisposeAsync();

    public static TheoryData<string, string> Routes => new()
    {
        { "GET", "/api/queues" },
        { "GET", "/api/messages" },
        { "GET", "/api/messages/0000000000000001" },
        { "GET", "/api/messages/0000000000000001/content" },
        { "POST", "/api/messages/0000000000000001/retry" },
        { "DELETE", "/api/messages/0000000000000001" },
        { "DELETE", "/api/messages/0000000000000001?bounce=true" },
        { "POST", "/api/reload" },
        { "GET", "/metrics" },
    };

    [Theory]
    [MemberData(nameof(Routes))]
    public async Task Every_route_but_healthz_refuses_a_missing_or_wrong_token(string method, string path)
    {
        using var none = await _h.Anonymous.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));
        Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
        Assert.Equal("unauthorized", JsonDocument.Parse(await none.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString());

        var wrong = new HttpRequestMessage(new HttpMethod(method), path);
        wrong.Headers.Add("X-API-Token", AdminHarness.Token + "x");
        using var refused = await _h.Anonymous.SendAsync(wrong);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);

        var right = new HttpRequestMessage(new HttpMethod(method), path);
        right.Headers.Add("X-API-Token", AdminHarness.Token);
        using var accepted = await _h.Anonymous.SendAsync(right);
        Assert.NotEqual(HttpStatusCode.Unauthorized, accepted.StatusCode);
        Assert.Equal(0, _h.ReloadCalls > 0 && path != "/api/reload" ? 1 : 0);
    }

    [Fact]
    public async Task Healthz_answers_without_a_token()
    {
        using var response = await _h.Anonymous.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ok\n", await response.Content.ReadAsStringAsync());
        Assert.NotEqual(0, _h.Server.EndPoint.Port);
    }

    [Fact]
    public async Task Queues_show_depth_in_flight_oldest_age_latency_and_sla()
    {
        await _h.SendAsync("app@sender.test", "hold1@remote.test");
        await _h.Agent.WaitHeldAsync("hold1@remote.test");
        _h.Clock.Advance(TimeSpan.FromSeconds(90));

        var json = await _h.GetJsonAsync("/api/queues");
        var queues = json.GetProperty("queues").EnumerateArray().ToDictionary(q => q.GetProperty("name").GetString()!);
        Assert.Equal(["default", "urgent"], queues.Keys.Order());
        var d = queues["default"];
        Assert.Equal(1, d.GetProperty("depth").GetInt64());
        Assert.Equal(1, d.GetProperty("in_flight").GetInt32());
        Assert.Equal(10, d.GetProperty("threads_per_node").GetInt32());
        Assert.Equal(90, d.GetProperty("oldest_age_seconds").GetDouble());
        Assert.Equal(3600, d.GetProperty("sla_seconds").GetDouble());
        Assert.Equal(JsonValueKind.Null, d.GetProperty("latency_seconds").GetProperty("p95").ValueKind);
        Assert.Equal(0, queues["urgent"].GetProperty("depth").GetInt64());
        Assert.Equal(300, queues["urgent"].GetProperty("sla_seconds").GetDouble());

        _h.Agent.Release("hold1@remote.test");
        await _h.IdleAsync();
        var after = await _h.GetAsync<QueuesResponse>("/api/queues");
        var q = after.Queues.Single(x => x.Name == "default");
        Assert.Equal(0, q.Depth);
        Assert.Equal(0, q.InFlight);
        Assert.Equal(0, q.OldestAgeSeconds);
        Assert.Equal(90, q.LatencySeconds.P50);
        Assert.Equal(90, q.LatencySeconds.P99);
        Assert.True(q.SlaMet);
        Assert.Equal(0, q.SlaViolations);
    }

    [Fact]
    public async Task Messages_have_the_documented_shape_in_snake_case_with_utc_times()
    {
        var id = await _h.SendAsync("app@sender.test", "defer1@remote.test", "ok@other.test");
        await _h.IdleAsync();

        using var response = await _h.Http.GetAsync("/api/messages");
        var text = await response.Content.ReadAsStringAsync();
        var root = JsonDocument.Parse(text).RootElement;
        Assert.Equal(JsonValueKind.Null, root.GetProperty("next").ValueKind);
        var m = root.GetProperty("messages").EnumerateArray().Single();
        Assert.Equal(id, m.GetProperty("id").GetString());
        Assert.Equal("app@sender.test", m.GetProperty("sender").GetString());
        Assert.True(m.GetProperty("size").GetInt64() > 0);
        Assert.Equal(0, m.GetProperty("priority").GetInt32());
        Assert.Equal("2026-11-23T09:00:00Z", m.GetProperty("arrived_at").GetString());
        Assert.Equal("pending", m.GetProperty("status").GetString());
        var r = m.GetProperty("recipients").EnumerateArray().ToList();
        Assert.Equal("defer1@remote.test", r[0].GetProperty("address").GetString());
        Assert.Equal("pending", r[0].GetProperty("status").GetString());
        Assert.Equal("default", r[0].GetProperty("schedule").GetString());
        Assert.Equal("default", r[0].GetProperty("queue").GetString());
        Assert.Equal(1, r[0].GetProperty("attempts").GetInt32());
        Assert.Equal("2026-11-23T10:00:00Z", r[0].GetProperty("next_attempt_at").GetString());
        Assert.Equal("450 4.2.0 mailbox busy", r[0].GetProperty("last_error").GetString());
        Assert.Equal("delivered", r[1].GetProperty("status").GetString());
        Assert.Equal(JsonValueKind.Null, r[1].GetProperty("next_attempt_at").ValueKind);
        Assert.Equal(JsonValueKind.Null, r[1].GetProperty("last_error").ValueKind);
    }

    [Fact]
    public async Task Messages_filter_by_queue_domain_sender_and_status_and_page_with_a_cursor()
    {
        var a = await _h.SendAsync("app@sender.test", "defer1@remote.test");
        var b = await _h.SendAsync("other@elsewhere.test", "defer2@remote.test");
        var c = await _h.SendAsync("app@sender.test", "defer-vip@vip.test");
        var d = await _h.SendAsync("app@sender.test", "bounce@remote.test");
        await _h.IdleAsync();

        async Task<List<string>> Ids(string query) =>
            (await _h.GetAsync<MessagesResponse>("/api/messages" + query)).Messages.Select(m => m.Id).ToList();

        Assert.Equal([a, b, c, d], await Ids(""));
        Assert.Equal([c], await Ids("?queue=urgent"));
        Assert.Equal([a, b, d], await Ids("?domain=REMOTE.test"));
        Assert.Equal([b], await Ids("?sender=other@elsewhere.test"));
        Assert.Equal([a, c, d], await Ids("?sender=sender.test"));
        Assert.Equal([a, b, c], await Ids("?status=pending"));
        Assert.Equal([d], await Ids("?status=failed"));
        Assert.Equal([a, b], await Ids("?queue=default&status=pending"));

        var first = await _h.GetAsync<MessagesResponse>("/api/messages?limit=3");
        Assert.Equal([a, b, c], first.Messages.Select(m => m.Id));
        Assert.Equal(c, first.Next);
        var second = await _h.GetAsync<MessagesResponse>("/api/messages?limit=3&cursor=" + first.Next);
        Assert.Equal([d], second.Messages.Select(m => m.Id));
        Assert.Null(second.Next);

        using var bad = await _h.Http.GetAsync("/api/messages?status=lost");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        using var badLimit = await _h.Http.GetAsync("/api/messages?limit=0");
        Assert.Equal(HttpStatusCode.BadRequest, badLimit.StatusCode);
    }

    [Fact]
    public async Task A_bounced_message_stays_visible_as_a_dead_letter_with_its_reason_and_original()
    {
        var id = await _h.SendAsync("app@sender.test", "bounce@remote.test");
        await _h.IdleAsync();

        var dead = (await _h.GetAsync<MessagesResponse>("/api/messages?status=failed")).Messages.Single();
        Assert.Equal(id, dead.Id);
        Assert.Equal("failed", dead.Status);
        Assert.Equal("550 5.1.1 no such user", dead.Reason);
        Assert.Equal("2026-11-23T09:00:00Z", dead.FinalizedAt!.Value.ToString("yyyy-MM-ddTHH:mm:ssZ"));
        Assert.Equal(new DateTime(2026, 11, 30, 9, 0, 0, DateTimeKind.Utc), dead.RetainedUntil);
        Assert.Equal("failed", dead.Recipients.Single().Status);
        Assert.Equal("mx.remote.test", dead.Recipients.Single().RemoteHost);

        using var content = await _h.Http.GetAsync($"/api/messages/{id}/content");
        Assert.Equal("message/rfc822", content.Content.Headers.ContentType!.MediaType);
        Assert.StartsWith("From: app@sender.test\r\nSubject: test " + id, await content.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task One_message_shows_its_attempts_and_dsns()
    {
        var id = await _h.SendAsync("app@sender.test", "bounce@remote.test", "defer1@remote.test");
        await _h.IdleAsync();

        var json = await _h.GetJsonAsync($"/api/messages/{id}");
        Assert.Equal(id, json.GetProperty("id").GetString());
        Assert.Equal(2, json.GetProperty("recipients").GetArrayLength());
        var attempts = json.GetProperty("attempts").EnumerateArray().ToList();
        Assert.Equal(2, attempts.Count);
        Assert.Contains(attempts, a => a.GetProperty("recipient").GetString() == "bounce@remote.test"
                                       && a.GetProperty("result").GetString() == "permanent"
                                       && a.GetProperty("code").GetInt32() == 550
                                       && a.GetProperty("status").GetString() == "5.1.1"
                                       && a.GetProperty("remote_host").GetString() == "mx.remote.test"
                                       && a.GetProperty("at").GetString() == "2026-11-23T09:00:00Z");
        Assert.Contains(attempts, a => a.GetProperty("result").GetString() == "temporary" && a.GetProperty("attempt").GetInt32() == 1);
        var dsn = json.GetProperty("dsns").EnumerateArray().Single();
        Assert.Equal("failure", dsn.GetProperty("kind").GetString());
        Assert.Equal("bounce@remote.test", dsn.GetProperty("recipients")[0].GetString());

        using var missing = await _h.Http.GetAsync("/api/messages/ffffffffffffffff");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task Retry_makes_a_deferred_recipient_due_now()
    {
        var id = await _h.SendAsync("app@sender.test", "defer1@remote.test");
        await _h.IdleAsync();
        Assert.Single(_h.Agent.Calls);

        using var response = await _h.Http.PostAsync($"/api/messages/{id}/retry", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var action = (await response.Content.ReadFromJsonAsync<ActionResponse>(ApiJson.Options))!;
        Assert.Equal(new ActionResponse(id, "retry", 1), action);
        await Eventually.TrueAsync(() => _h.Agent.Calls.Count == 2, "a second attempt right away");
        await _h.IdleAsync();
        var m = await _h.GetAsync<MessageDetail>($"/api/messages/{id}");
        Assert.Equal(2, m.Recipients.Single().Attempts);
        Assert.Equal(2, m.Attempts.Count);

        using var missing = await _h.Http.PostAsync("/api/messages/ffffffffffffffff/retry", null);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task Retry_of_a_dead_letter_queues_it_again_under_its_own_id()
    {
        _h.Agent.Override = a => a == "later@remote.test" ? RecipientOutcomeFor.Bounce(a) : null;
        var id = await _h.SendAsync("app@sender.test", "later@remote.test", "ok@remote.test");
        await _h.IdleAsync();
        Assert.Equal("failed", (await _h.GetAsync<MessageDetail>($"/api/messages/{id}")).Status);
        var callsBefore = _h.Agent.Calls.Count;

        _h.Agent.Override = null;   // the remote side is fixed
        _h.Clock.Advance(TimeSpan.FromMinutes(10));
        using var response = await _h.Http.PostAsync($"/api/messages/{id}/retry", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var action = (await response.Content.ReadFromJsonAsync<ActionResponse>(ApiJson.Options))!;
        Assert.Equal("requeue", action.Action);
        Assert.Equal(1, action.Recipients);
        Assert.Equal(id, action.RequeuedAs);

        await Eventually.TrueAsync(() => _h.Agent.Calls.Count > callsBefore, "the dead letter is delivered again");
        var call = _h.Agent.Calls.Skip(callsBefore).Single();
        Assert.Equal(id, call.MessageId);
        Assert.Equal(["later@remote.test"], call.Recipients.Select(r => r.Address));   // the delivered one is not sent twice
        await _h.IdleAsync();
        // Delivered now: every recipient final and none failed, so it leaves the spool.
        using var old = await _h.Http.GetAsync($"/api/messages/{id}");
        Assert.Equal(HttpStatusCode.NotFound, old.StatusCode);
    }

    [Fact]
    public async Task Cancel_removes_the_message_without_a_dsn()
    {
        var id = await _h.SendAsync("app@sender.test", "defer1@remote.test");
        await _h.IdleAsync();

        using var response = await _h.Http.DeleteAsync($"/api/messages/{id}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var action = (await response.Content.ReadFromJsonAsync<ActionResponse>(ApiJson.Options))!;
        Assert.Equal(new ActionResponse(id, "cancel", 1, null, false), action);
        using var gone = await _h.Http.GetAsync($"/api/messages/{id}");
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        Assert.Empty(_h.Reports.Final);
        Assert.Equal(0, (await _h.GetAsync<QueuesResponse>("/api/queues")).Queues.Single(q => q.Name == "default").Depth);


        using var again = await _h.Http.DeleteAsync($"/api/messages/{id}");
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
    }

    [Fact]
    public async Task Cancel_with_bounce_sends_a_failure_report_for_the_pending_recipients()
    {
        var id = await _h.SendAsync("app@sender.test", "defer1@remote.test", "ok@remote.test");
        await _h.IdleAsync();
        _h.Reports.Final.Clear();

        using var response = await _h.Http.DeleteAsync($"/api/messages/{id}?bounce=true");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var action = (await response.Content.ReadFromJsonAsync<ActionResponse>(ApiJson.Options))!;
        Assert.True(action.Bounced);
        Assert.Equal(1, action.Recipients);

        var report = Assert.Single(_h.Reports.Final);
        var r = Assert.Single(report.Recipients);
        Assert.Equal("defer1@remote.test", r.Entry.Address);
        Assert.Equal(RecipientStatus.Failed, r.Status);
        Assert.Equal("5.0.0", r.LastError!.EnhancedStatus);
        var metrics = await _h.MetricsAsync();
        Assert.Equal(1, Scrape.Value(metrics, "relay_dsn_sent_total{kind=\"failure\"}"));
        Assert.Equal(1, Scrape.Value(metrics, "relay_deliveries_total{queue=\"default\",result=\"failed\"}"));
        using var gone = await _h.Http.GetAsync($"/api/messages/{id}");
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
    }

    [Fact]
    public async Task Reload_reports_success_and_refuses_an_invalid_config_with_its_errors()
    {
        using (var ok = await _h.Http.PostAsync("/api/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            var body = (await ok.Content.ReadFromJsonAsync<ReloadResponse>(ApiJson.Options))!;
            Assert.True(body.Ok);
            Assert.Equal("reloaded", body.Summary);
            Assert.Empty(body.Errors);
        }

        var broken = ConfigLoader.Parse("[queue.virtual.default]\nthreads-per-node = \"many\"\n", "config/config.toml");
        Assert.False(broken.Ok);
        _h.Reload = _ => Task.FromResult(ReloadResult.Refused(broken.Errors));
        using var refused = await _h.Http.PostAsync("/api/reload", null);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, refused.StatusCode);
        var json = JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement;
        Assert.False(json.GetProperty("ok").GetBoolean());
        var error = json.GetProperty("errors")[0];
        Assert.Equal("config/config.toml", error.GetProperty("file").GetString());
        Assert.True(error.GetProperty("line").GetInt32() > 0);
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.Equal(2, _h.ReloadCalls);

        _h.Reload = _ => throw new InvalidOperationException("host not ready");
        using var failed = await _h.Http.PostAsync("/api/reload", null);
        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);

        var metrics = await _h.MetricsAsync();
        Assert.Equal(1, Scrape.Value(metrics, "relay_config_reloads_total{result=\"ok\"}"));
        Assert.Equal(1, Scrape.Value(metrics, "relay_config_reloads_total{result=\"refused\"}"));
        Assert.Equal(1, Scrape.Value(metrics, "relay_config_reloads_total{result=\"error\"}"));
    }

    // Review 2, finding 10: a held message shows when it arrived, not when its hold ends.
    [Fact]
    public async Task A_held_message_shows_its_real_arrival()
    {
        string id;
        await using (var m = _h.Spool.Begin())
        {
            id = m.Id;
            await m.WriteAsync(System.Text.Encoding.ASCII.GetBytes("Subject: held\r\n\r\nhello\r\n"));
            await m.CommitAsync(new Relay.Spool.MessageEnvelope
            {
                Id = m.Id, Sender = "app@sender.test", ArrivedAt = _h.Clock.GetUtcNow(), NotBefore = _h.Clock.GetUtcNow().AddHours(6),
                Recipients = [new Relay.Spool.RecipientEntry { Address = "a@remote.test", Schedule = "default", Queue = "default" }],
            });
        }
        await _h.IdleAsync();
        var m2 = await _h.GetJsonAsync("/api/messages/" + id);
        Assert.Equal("2026-11-23T09:00:00Z", m2.GetProperty("arrived_at").GetString());
    }
}

internal static class RecipientOutcomeFor
{
    public static Relay.Scheduler.RecipientOutcome Bounce(string address) =>
        Relay.Scheduler.RecipientOutcome.Permanent(address, 550, "5.2.1", "mailbox disabled", "mx.remote.test");
}
