using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using MimeKit;
using Relay.Api.Tests.Harness;
using Relay.Events;
using Relay.Spool;

namespace Relay.Api.Tests;

/// <summary>POST /api/v1/messages: what lands in the spool, how it is classified, what the client hears.</summary>
public sealed class SubmissionTests : IAsyncLifetime
{
    private ApiHarness _h = null!;

    public async Task InitializeAsync() => _h = await ApiHarness.StartAsync();
    public async Task DisposeAsync() => await _h.DisposeAsync();

    private static readonly byte[] Pdf = [.. Encoding.ASCII.GetBytes("%PDF-1.4\n"), .. Enumerable.Range(0, 3000).Select(i => (byte)(i * 7))];
    private static readonly byte[] Png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, .. Enumerable.Range(0, 500).Select(i => (byte)i)];

    [Fact]
    public async Task A_json_message_with_two_attachments_one_inline_is_spooled_as_MIME_with_the_bytes_unchanged()
    {
        using var response = await _h.PostAsync(new
        {
            from = "Shop <orders@app.test>",
            to = new[] { "Ann <ann@remote.test>" },
            cc = "carl@remote.test",
            bcc = new[] { "audit@remote.test" },
            reply_to = (string?)null,
            subject = "Your order № 42",
            text = "Thanks for your order.",
            html = "<p>Thanks!</p><img src=\"cid:logo@app\">",
            headers = new Dictionary<string, string> { ["X-Order"] = "42" },
            attachments = new object[]
            {
                new Dictionary<string, string> { ["name"] = "invoice.pdf", ["content-type"] = "application/pdf", ["content"] = Convert.ToBase64String(Pdf) },
                new Dictionary<string, string> { ["name"] = "logo.png", ["content-type"] = "image/png", ["content"] = Convert.ToBase64String(Png), ["content-id"] = "logo@app" },
            },
        }.WithoutNulls());
        var body = await ApiHarness.JsonAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.Accepted, body.ToJsonString());
        var id = body["id"]!.GetValue<string>();
        Assert.Equal(3, body["recipients"]!.GetValue<int>());
        Assert.Equal($"/api/v1/messages/{id}", response.Headers.Location!.OriginalString);

        var envelope = await _h.EnvelopeAsync(id);
        Assert.Equal("api", envelope.Source);
        Assert.Equal("app", envelope.AuthenticatedAs);
        Assert.Equal("orders@app.test", envelope.Sender);
        Assert.Equal(["ann@remote.test", "carl@remote.test", "audit@remote.test"], envelope.Recipients.Select(r => r.Address));
        Assert.All(envelope.Recipients, r => Assert.Equal("default", r.Schedule));
        Assert.Null(envelope.NotBefore);

        var raw = Encoding.ASCII.GetString(await _h.BytesAsync(id));
        Assert.StartsWith("Received: from app ([127.0.0.1])\r\n\tby relay.example.test (Relay) with HTTP id " + id, raw);
        Assert.DoesNotContain("\n", raw.Replace("\r\n", ""));   // CRLF only
        Assert.DoesNotContain("audit@remote.test", raw);         // bcc is envelope only

        var message = await _h.LoadAsync(id);
        Assert.NotNull(message.Headers[HeaderId.Date]);
        Assert.NotNull(message.MessageId);
        Assert.Equal("1.0", message.Headers[HeaderId.MimeVersion]);
        Assert.Equal("Your order № 42", message.Subject);
        Assert.Equal("42", message.Headers["X-Order"]);
        Assert.Equal("Ann", message.To.Mailboxes.Single().Name);
        Assert.Equal("Thanks for your order.", message.TextBody!.Trim());
        Assert.Contains("cid:logo@app", message.HtmlBody);
        var related = message.BodyParts.OfType<MimePart>().ToList();
        var invoice = Assert.Single(message.Attachments.OfType<MimePart>(), p => p.FileName == "invoice.pdf");
        Assert.Equal(Pdf, Decode(invoice));
        var logo = Assert.Single(related, p => p.ContentId == "logo@app");
        Assert.Equal("image/png", logo.ContentType.MimeType);
        Assert.Equal(Png, Decode(logo));
        Assert.True(message.Body is Multipart { ContentType.MediaSubtype: "mixed" });
        Assert.Contains(message.BodyParts, p => p.ContentType.MediaSubtype == "plain");

        Assert.Single(_h.Events.Accepted, e => e.Id == id);
        Assert.Equal(0, _h.Events.NotYetDurable);
    }

    private static byte[] Decode(MimePart part)
    {
        var copy = new MemoryStream();
        part.Content!.DecodeTo(copy);
        return copy.ToArray();
    }

    [Theory]
    [InlineData("urgent", 6, "urgent")]
    [InlineData("high", 3, "default")]
    [InlineData("bulk", -6, "default")]
    [InlineData("7", 7, "urgent")]
    public async Task The_priority_field_sets_the_envelope_priority_and_routes_through_the_strategy(string priority, int expected, string schedule)
    {
        var id = await _h.SubmitAsync(new { from = "a@app.test", to = "x@remote.test", text = "t", priority });
        var envelope = await _h.EnvelopeAsync(id);
        Assert.Equal(expected, envelope.Priority);
        Assert.Equal(schedule, envelope.Recipients[0].Schedule);
        Assert.Equal(schedule, envelope.Recipients[0].Queue);
    }

    [Fact]
    public async Task A_numeric_json_priority_and_the_X_Message_Priority_header_work_like_smtp()
    {
        var numeric = await _h.EnvelopeAsync(await _h.SubmitAsync(new { from = "a@app.test", to = "x@remote.test", text = "t", priority = 6 }));
        Assert.Equal("urgent", numeric.Recipients[0].Schedule);
        var header = await _h.EnvelopeAsync(await _h.SubmitAsync(new
        {
            from = "a@app.test", to = "x@remote.test", text = "t",
            headers = new Dictionary<string, string> { ["X-Message-Priority"] = "urgent" },
        }));
        Assert.Equal(6, header.Priority);
        Assert.Equal("urgent", header.Recipients[0].Schedule);
        var none = await _h.EnvelopeAsync(await _h.SubmitAsync(new { from = "a@app.test", to = "x@remote.test", text = "t" }));
        Assert.Equal(0, none.Priority);
        Assert.Equal("default", none.Recipients[0].Schedule);
    }

    [Fact]
    public async Task Strategy_rules_see_the_request_headers_source_and_client_name()
    {
        var otp = await _h.EnvelopeAsync(await _h.SubmitAsync(new
        {
            from = "a@app.test", to = "x@remote.test", text = "123456",
            headers = new Dictionary<string, string> { ["X-Kind"] = "otp" },
        }));
        Assert.Equal("urgent", otp.Recipients[0].Schedule);
        var other = await _h.EnvelopeAsync(await _h.SubmitAsync(new { from = "a@anywhere.test", to = "x@remote.test", text = "t" }, ApiHarness.OtherToken));
        Assert.Equal("other", other.Recipients[0].Schedule);
        Assert.Equal("other", other.AuthenticatedAs);
    }

    [Fact]
    public async Task Envelope_and_dsn_fields_reach_the_envelope()
    {
        var id = await _h.SubmitAsync(new Dictionary<string, object>
        {
            ["from"] = "News <news@app.test>",
            ["to"] = "list@app.test",
            ["text"] = "hello",
            ["envelope"] = new Dictionary<string, object> { ["mail-from"] = "bounces@mail.app.test", ["rcpt-to"] = new[] { "one@remote.test", "two@remote.test" } },
            ["notify"] = "success,failure",
            ["ret"] = "hdrs",
            ["envid"] = "order-42",
        });
        var e = await _h.EnvelopeAsync(id);
        Assert.Equal("bounces@mail.app.test", e.Sender);
        Assert.Equal(["one@remote.test", "two@remote.test"], e.Recipients.Select(r => r.Address));
        Assert.All(e.Recipients, r => Assert.Equal(DsnNotify.Success | DsnNotify.Failure, r.Notify));
        Assert.Equal(DsnReturn.Headers, e.Return);
        Assert.Equal("order-42", e.EnvelopeId);
        var m = await _h.LoadAsync(id);
        Assert.Equal("list@app.test", m.To.Mailboxes.Single().Address);   // headers keep the author's view
    }

    [Fact]
    public async Task A_batch_answers_one_result_per_item_and_queues_only_the_good_ones()
    {
        var json = """
            [ { "from": "a@app.test", "to": "x@remote.test", "text": "one" },
              { "from": "a@app.test", "to": "not an address", "text": "two" },
              { "from": "a@app.test", "to": ["y@remote.test", "z@remote.test"], "text": "three", "priority": "urgent" } ]
            """;
        using var response = await _h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken, json);
        Assert.Equal((HttpStatusCode)207, response.StatusCode);
        var results = (await ApiHarness.JsonAsync(response))["results"]!.AsArray();
        Assert.Equal([202, 400, 202], results.Select(r => r!["status"]!.GetValue<int>()));
        Assert.Equal(2, results[2]!["recipients"]!.GetValue<int>());
        Assert.NotNull(results[1]!["problem"]!["errors"]!["to[0]"]);
        Assert.Equal(2, _h.Spool.Count);
        var urgent = await _h.EnvelopeAsync(results[2]!["id"]!.GetValue<string>());
        Assert.Equal("urgent", urgent.Recipients[0].Schedule);
    }

    [Fact]
    public async Task A_batch_over_max_batch_is_413_and_queues_nothing()
    {
        var items = string.Join(",", Enumerable.Range(0, 6).Select(i => $$"""{ "from": "a@app.test", "to": "x@remote.test", "text": "{{i}}" }"""));
        using var response = await _h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken, $"[{items}]");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Contains("at most 5", (await ApiHarness.JsonAsync(response))["detail"]!.GetValue<string>());
        Assert.Equal(0, _h.StoredMessages);
    }

    [Fact]
    public async Task Status_is_shown_only_to_the_client_that_sent_the_message()
    {
        var id = await _h.SubmitAsync(new { from = "a@app.test", to = "x@remote.test", text = "t" });
        var now = DateTimeOffset.UtcNow;
        _h.Events.Views[id] = new MessageStatusView(id, "app", "a@app.test", 0, now, null,
            [new RecipientStatusView("x@remote.test", "deferred", "default", "default", 1, now, now.AddMinutes(1), "450 4.2.0 busy")],
            [new DeliveryEvent(1, DeliveryEventType.Accepted, id, "app", null, now, 0, 0, null, null, null)]);

        using var mine = await _h.SendAsync(HttpMethod.Get, $"/api/v1/messages/{id}", ApiHarness.AppToken);
        Assert.Equal(HttpStatusCode.OK, mine.StatusCode);
        var view = await ApiHarness.JsonAsync(mine);
        Assert.Equal("deferred", view["recipients"]![0]!["state"]!.GetValue<string>());
        Assert.Equal("450 4.2.0 busy", view["recipients"]![0]!["last-reply"]!.GetValue<string>());

        using var theirs = await _h.SendAsync(HttpMethod.Get, $"/api/v1/messages/{id}", ApiHarness.OtherToken);
        Assert.Equal(HttpStatusCode.NotFound, theirs.StatusCode);
        using var unknown = await _h.SendAsync(HttpMethod.Get, "/api/v1/messages/0000000000000000", ApiHarness.AppToken);
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Equal("application/problem+json", unknown.Content.Headers.ContentType!.MediaType);
    }

    [Fact]
    public async Task The_openapi_document_describes_the_routes()
    {
        using var response = await _h.SendAsync(HttpMethod.Get, "/api/v1/openapi.json", token: null);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        var doc = JsonNode.Parse(text)!;
        Assert.StartsWith("3.", doc["openapi"]!.GetValue<string>());
        var paths = doc["paths"]!.AsObject();
        Assert.True(paths.ContainsKey("/api/v1/messages"), text[..Math.Min(600, text.Length)]);
        Assert.True(paths.ContainsKey("/api/v1/messages:batch"));
        Assert.True(paths.ContainsKey("/api/v1/messages/{id}"));
        Assert.True(paths.ContainsKey("/api/v1/templates"));
        Assert.NotNull(paths["/api/v1/messages"]!["post"]!["responses"]!["202"]);
        Assert.Contains("attachments", text);
    }
}

internal static class AnonymousExtensions
{
    /// <summary>Anonymous object → JSON object with kebab-case keys (reply_to → reply-to) and nulls left out.</summary>
    public static string WithoutNulls(this object value)
    {
        var node = System.Text.Json.JsonSerializer.SerializeToNode(value)!.AsObject();
        var result = new JsonObject();
        foreach (var (k, v) in node.ToList())
            if (v is not null) result[k.Replace('_', '-')] = v.DeepClone();
        return result.ToJsonString();
    }
}

public sealed class WebhookTargetTests
{
    [Fact]
    public void Clients_with_a_webhook_become_webhook_targets()
    {
        var result = Relay.Config.ConfigLoader.Parse("""
            [api.client.a]
            token = "t"
            webhook = "http://127.0.0.1:9000/a"
            webhook-secret = "s"
            [api.client.b]
            token = "u"
            [queue.strategy]
            schedule = [ { else = "'default'" } ]
            [queue.schedule.default]
            [queue.virtual.default]
            """);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        var target = Assert.Single(ApiWebhooks.TargetsFrom(result.Settings!.Api));
        Assert.Equal(new WebhookTarget("a", new Uri("http://127.0.0.1:9000/a"), "s"), target);
    }
}
