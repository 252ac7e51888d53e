using System.Net;
using Microsoft.Extensions.Time.Testing;
using Relay.Api.Tests.Harness;

namespace Relay.Api.Tests;

/// <summary>Same client + same Idempotency-Key within the window → the same id, queued once.</summary>
public sealed class IdempotencyTests : IAsyncLifetime
{
    private ApiHarness _h = null!;
    private const string Body = """{ "from": "a@app.test", "to": "x@remote.test", "text": "once" }""";

    public async Task InitializeAsync() => _h = await ApiHarness.StartAsync();
    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task A_repeated_key_returns_the_same_id_and_queues_once()
    {
        var first = await _h.SubmitAsync(Body, idempotencyKey: "order-42");
        var second = await _h.SubmitAsync(Body, idempotencyKey: "order-42");
        Assert.Equal(first, second);
        Assert.Equal(1, _h.Spool.Count);
        Assert.Single(_h.Events.Accepted);
        var other = await _h.SubmitAsync(Body, idempotencyKey: "order-43");
        Assert.NotEqual(first, other);
        Assert.Equal(2, _h.Spool.Count);
    }

    [Fact]
    public async Task Concurrent_requests_with_one_key_get_one_id()
    {
        var ids = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => _h.SubmitAsync(Body, idempotencyKey: "burst")));
        Assert.Single(ids.Distinct());
        Assert.Equal(1, _h.Spool.Count);
        Assert.Single(_h.Events.Accepted);
    }

    [Fact]
    public async Task The_key_survives_a_restart()
    {
        var first = await _h.SubmitAsync(Body, idempotencyKey: "restart-key");
        await _h.RestartAsync();
        var again = await _h.SubmitAsync(Body, idempotencyKey: "restart-key");
        Assert.Equal(first, again);
        Assert.Equal(1, _h.Spool.Count);
        var file = new FileInfo(Path.Combine(_h.Settings.Api.StateDirectory, IdempotencyStore.FileName));
        Assert.True(file.Exists);
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file.FullName));
    }

    [Fact]
    public async Task Keys_are_per_client()
    {
        var mine = await _h.SubmitAsync(Body, idempotencyKey: "shared");
        var theirs = await _h.SubmitAsync(Body, ApiHarness.OtherToken, idempotencyKey: "shared");
        Assert.NotEqual(mine, theirs);
        Assert.Equal(2, _h.Spool.Count);
    }

    [Fact]
    public async Task The_same_key_with_another_body_is_422_and_queues_nothing_more()
    {
        await _h.SubmitAsync(Body, idempotencyKey: "k");
        using var response = await _h.PostAsync(Body.Replace("once", "twice"), idempotencyKey: "k");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        Assert.Equal(1, _h.Spool.Count);
    }

    [Fact]
    public async Task A_refused_request_does_not_use_up_its_key()
    {
        using var bad = await _h.PostAsync("""{ "from": "a@app.test", "text": "no recipient" }""", idempotencyKey: "fix-me");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        using var conflict = await _h.PostAsync(Body, idempotencyKey: "fix-me");
        Assert.Equal(HttpStatusCode.Accepted, conflict.StatusCode);
        Assert.Equal(1, _h.Spool.Count);
    }

    [Fact]
    public async Task A_batch_key_applies_per_item()
    {
        var json = $"[{Body}, {Body.Replace("once", "two")}]";
        using var first = await _h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken, json, "batch-1");
        using var second = await _h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken, json, "batch-1");
        var a = (await ApiHarness.JsonAsync(first))["results"]!.AsArray().Select(r => r!["id"]!.GetValue<string>()).ToList();
        var b = (await ApiHarness.JsonAsync(second))["results"]!.AsArray().Select(r => r!["id"]!.GetValue<string>()).ToList();
        Assert.Equal(a, b);
        Assert.Equal(2, a.Distinct().Count());
        Assert.Equal(2, _h.Spool.Count);
    }

    [Fact]
    public async Task A_torn_last_line_from_a_crash_is_ignored_and_the_other_keys_survive()
    {
        var first = await _h.SubmitAsync(Body, idempotencyKey: "kept");
        await _h.Server.DisposeAsync();
        File.AppendAllText(Path.Combine(_h.Settings.Api.StateDirectory, IdempotencyStore.FileName), "{\"client\":\"app\",\"ke");
        await _h.RestartAsync();
        Assert.Equal(first, await _h.SubmitAsync(Body, idempotencyKey: "kept"));
        Assert.NotEqual(first, await _h.SubmitAsync(Body, idempotencyKey: "new"));
        Assert.Equal(2, _h.Spool.Count);
    }

    [Fact]
    public async Task After_the_window_a_key_queues_a_new_message()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var h = await ApiHarness.StartAsync(clock: clock);
        var first = await h.SubmitAsync(Body, idempotencyKey: "daily");
        clock.Advance(TimeSpan.FromHours(23));
        Assert.Equal(first, await h.SubmitAsync(Body, idempotencyKey: "daily"));
        clock.Advance(TimeSpan.FromHours(2));   // 25h after the first: the default 24h window is over
        await h.RestartAsync();                 // and the expired key is dropped from the file
        var second = await h.SubmitAsync(Body, idempotencyKey: "daily");
        Assert.NotEqual(first, second);
        Assert.Equal(2, h.Spool.Count);
    }
}
