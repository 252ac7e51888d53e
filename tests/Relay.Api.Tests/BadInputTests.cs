using System.Net;
using Relay.Api.Tests.Harness;

namespace Relay.Api.Tests;

/// <summary>Every refused request answers its status with the field names and leaves nothing in the spool.</summary>
public sealed class BadInputTests : IAsyncLifetime
{
    private ApiHarness _h = null!;

    public async Task InitializeAsync() => _h = await ApiHarness.StartAsync("""
        [api.client.small]
        token = "small-token"
        max-message-size = "4KB"
        """);
    public async Task DisposeAsync() => await _h.DisposeAsync();

    private async Task AssertRefusedAsync(HttpResponseMessage response, HttpStatusCode status, params string[] fields)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType!.MediaType);
        var problem = System.Text.Json.Nodes.JsonNode.Parse(text)!;
        Assert.Equal((int)status, problem["status"]!.GetValue<int>());
        Assert.StartsWith("urn:relay:problem:", problem["type"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(problem["title"]!.GetValue<string>()));
        foreach (var field in fields)
            Assert.True(problem["errors"]?[field] is not null, $"no error for '{field}' in {text}");
        Assert.Equal(0, _h.StoredMessages);
        Assert.Equal(0, _h.Spool.Count);
        Assert.Empty(_h.Events.Accepted);
    }

    [Theory]
    [InlineData("""{ "to": "x@remote.test", "text": "t" }""", "from")]
    [InlineData("""{ "from": "not-an-address", "to": "x@remote.test", "text": "t" }""", "from")]
    [InlineData("""{ "from": "a@app.test", "text": "t" }""", "to")]
    [InlineData("""{ "from": "a@app.test", "to": ["x@remote.test", "bad address"], "text": "t" }""", "to[1]")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "cc": "@", "bcc": ["y"], "text": "t" }""", "cc[0]", "bcc[0]")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "reply-to": "nope", "text": "t" }""", "reply-to[0]")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test" }""", "text")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "subject": "two\nlines" }""", "subject")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "priority": "asap" }""", "priority")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "priority": 12 }""", "priority")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "headers": { "Subject": "x", "Bad Name": "y", "X-Ok": "a\r\nb" } }""", "headers.Subject", "headers.Bad Name", "headers.X-Ok")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "headers": { "Authentication-Results": "mx; dkim=pass", "ARC-Seal": "i=1", "Resent-From": "a@b.test", "Received-SPF": "pass", "X-Fine": "ok" } }""", "headers.Authentication-Results", "headers.ARC-Seal", "headers.Resent-From", "headers.Received-SPF")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "attachments": [ { "content": "%%%" } ] }""", "attachments[0].name", "attachments[0].content")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "attachments": [ { "name": "a", "content": "", "content-type": "nonsense" } ] }""", "attachments[0].content-type")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "envelope": { "mail-from": "A <a@app.test>", "rcpt-to": ["ok@remote.test", "x y@z"] } }""", "envelope.mail-from", "envelope.rcpt-to[1]")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "notify": "sometimes" }""", "notify")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "notify": ["never", "success"] }""", "notify")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "ret": "all" }""", "ret")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "envid": "has space" }""", "envid")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "atachments": [] }""", "atachments")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "vars": { "a": 1 } }""", "vars")]
    [InlineData("""{ "from": "a@app.test", "to": 5, "text": "t" }""", "to")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": ["t"] }""", "text")]
    [InlineData("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t" """, "body")]
    [InlineData("""[]""", "body")]
    public async Task Invalid_fields_are_400_problem_json_naming_each_field(string json, params string[] fields)
    {
        using var response = await _h.PostAsync(json);
        await AssertRefusedAsync(response, HttpStatusCode.BadRequest, fields);
    }

    [Fact]
    public async Task A_missing_or_wrong_token_is_401_with_a_bearer_challenge()
    {
        const string ok = """{ "from": "a@app.test", "to": "x@remote.test", "text": "t" }""";
        using var none = await _h.PostAsync(ok, token: null);
        await AssertRefusedAsync(none, HttpStatusCode.Unauthorized);
        Assert.Equal("Bearer", none.Headers.WwwAuthenticate.Single().Scheme);
        using var wrong = await _h.PostAsync(ok, token: "app-token-123");
        await AssertRefusedAsync(wrong, HttpStatusCode.Unauthorized);
        using var status = await _h.SendAsync(HttpMethod.Get, "/api/v1/templates", "nope");
        Assert.Equal(HttpStatusCode.Unauthorized, status.StatusCode);
    }

    [Fact]
    public async Task A_sender_outside_allowed_senders_is_403_in_from_or_envelope()
    {
        using var from = await _h.PostAsync("""{ "from": "ceo@bank.test", "to": "x@remote.test", "text": "t" }""");
        await AssertRefusedAsync(from, HttpStatusCode.Forbidden);
        using var envelope = await _h.PostAsync("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "envelope": { "mail-from": "x@bank.test" } }""");
        await AssertRefusedAsync(envelope, HttpStatusCode.Forbidden);
        Assert.Contains("x@bank.test", await envelope.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_message_over_the_clients_max_message_size_is_413()
    {
        var big = Convert.ToBase64String(new byte[6000]);
        using var built = await _h.PostAsync($$"""{ "from": "a@app.test", "to": "x@remote.test", "text": "t", "attachments": [ { "name": "a.bin", "content": "{{big}}" } ] }""", token: "small-token");
        await AssertRefusedAsync(built, HttpStatusCode.RequestEntityTooLarge);
        var huge = new string('a', 64 * 1024);
        using var body = await _h.PostAsync($$"""{ "from": "a@app.test", "to": "x@remote.test", "text": "{{huge}}" }""", token: "small-token");
        await AssertRefusedAsync(body, HttpStatusCode.RequestEntityTooLarge);
    }

    [Fact]
    public async Task A_body_that_is_not_json_is_415()
    {
        using var response = await _h.SendAsync(HttpMethod.Post, "/api/v1/messages", ApiHarness.AppToken, "from=a", contentType: "application/x-www-form-urlencoded");
        await AssertRefusedAsync(response, HttpStatusCode.UnsupportedMediaType);
    }

    [Fact]
    public async Task A_hashed_token_authenticates()
    {
        await _h.SubmitAsync("""{ "from": "a@any.test", "to": "x@remote.test", "text": "t" }""", ApiHarness.OtherToken);
        Assert.Equal(1, _h.Spool.Count);
    }
}

/// <summary>A full virtual queue (max-size) refuses like SMTP's 452 4.3.1: 503 with Retry-After, nothing queued.</summary>
public sealed class BackPressureTests
{
    [Fact]
    public async Task A_recipient_for_a_full_queue_is_503_and_nothing_is_queued()
    {
        await using var h = await ApiHarness.StartAsync(queueHasRoom: queue => queue != "urgent");
        using var full = await h.PostAsync("""{ "from": "a@app.test", "to": ["x@remote.test", "y@remote.test"], "text": "t", "priority": "urgent" }""");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, full.StatusCode);
        Assert.NotNull(full.Headers.RetryAfter);
        Assert.Contains("urgent", await full.Content.ReadAsStringAsync());
        Assert.Equal(0, h.Spool.Count);
        Assert.Equal(0, h.StoredMessages);
        await h.SubmitAsync("""{ "from": "a@app.test", "to": "x@remote.test", "text": "t" }""");   // the default queue has room
    }
}
