using Relay.Config.Settings;
using static Relay.Config.Tests.ConfigFixtures;

namespace Relay.Config.Tests;

/// <summary>[api], [api.client.NAME] and [templates] (HTTP submission API, issue #10).</summary>
public class ApiConfigTests
{
    [Fact]
    public void Without_an_api_section_the_api_is_off_with_documented_defaults()
    {
        var s = LoadOk(MinimalQueue);
        Assert.False(s.Api.Enabled);
        Assert.Equal(100, s.Api.MaxBatch);
        Assert.Equal(25L * 1024 * 1024, s.Api.MaxBatchSize);
        Assert.Equal(TimeSpan.FromHours(24), s.Api.IdempotencyWindow);
        Assert.Empty(s.Api.Clients);
        Assert.Null(s.Api.TemplatesPath);
    }

    [Fact]
    public void Every_api_key_is_read()
    {
        var dir = Directory.CreateTempSubdirectory("relay-tpl-");
        try
        {
            var s = LoadOk($$"""
                [session]
                max-message-size = "10MB"
                [session.priority]
                default = 1
                [spool]
                path = "/var/spool/relay"
                [api]
                bind = "127.0.0.1:8080"
                max-batch = 20
                max-batch-size = "2MB"
                idempotency-window = "1h"
                [api.client.app]
                token = "sha256:{{new string('a', 64)}}"
                allowed-senders = ["noreply@app.test", "@mail.app.test", "*@other.test"]
                default-priority = "high"
                rate = "100/1m"
                rate-policy = "reject"
                max-message-size = "1MB"
                webhook = "http://127.0.0.1:9000/hook"
                webhook-secret = "s3cret"
                [api.client.plain]
                token = "t"
                [templates]
                path = "{{dir.FullName}}"
                {{MinimalQueue}}
                """);
            Assert.True(s.Api.Enabled);
            Assert.Equal("127.0.0.1:8080", s.Api.Bind!.ToString());
            Assert.Equal(20, s.Api.MaxBatch);
            Assert.Equal(2L * 1024 * 1024, s.Api.MaxBatchSize);
            Assert.Equal(TimeSpan.FromHours(1), s.Api.IdempotencyWindow);
            Assert.Equal("/var/spool/relay/api", s.Api.StateDirectory);
            Assert.Equal(dir.FullName, s.Api.TemplatesPath);
            var app = s.Api.Clients["app"];
            Assert.Equal(3, app.AllowedSenders.Count);
            Assert.Equal(3, app.DefaultPriority);
            Assert.Equal(new ApiRate(100, TimeSpan.FromMinutes(1)), app.Rate);
            Assert.Equal(ApiRatePolicy.Reject, app.RatePolicy);
            Assert.Equal(1024 * 1024, app.MaxMessageSize);
            Assert.Equal(new Uri("http://127.0.0.1:9000/hook"), app.Webhook);
            Assert.Equal("s3cret", app.WebhookSecret);
            Assert.True(app.MaySend("noreply@app.test"));
            Assert.True(app.MaySend("Anyone@MAIL.app.test"));
            Assert.True(app.MaySend("x@other.test"));
            Assert.False(app.MaySend("x@app.test"));
            Assert.False(app.MaySend("x@sub.other.test"));

            var plain = s.Api.Clients["plain"];
            Assert.Equal(1, plain.DefaultPriority);                 // [session.priority] default
            Assert.Equal(10L * 1024 * 1024, plain.MaxMessageSize);  // [session] max-message-size
            Assert.Null(plain.Rate);
            Assert.Equal(ApiRatePolicy.Hold, plain.RatePolicy);
            Assert.Empty(plain.AllowedSenders);
            Assert.True(plain.MaySend("anyone@anywhere.test"));
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void Numeric_default_priority_is_accepted()
    {
        var s = LoadOk("[api.client.a]\ntoken = \"t\"\ndefault-priority = -6\n" + MinimalQueue);
        Assert.Equal(-6, s.Api.Clients["a"].DefaultPriority);
    }

    [Fact]
    public void Bad_api_values_name_file_line_and_key()
    {
        var errors = LoadErrors("""
            [api]
            bind = "nowhere"
            max-batch = 0
            idempotency-window = "soon"
            colour = "blue"
            [api.client.app]
            allowed-senders = ["nobody", "@"]
            default-priority = "asap"
            rate = "fast"
            rate-policy = "drop"
            max-message-size = "big"
            webhook = "ftp://x.test/"
            [api.client.hooked]
            token = "t"
            webhook = "http://127.0.0.1/hook"
            [templates]
            path = "/no/such/folder/relay"
            """ + "\n" + MinimalQueue);
        AssertError(errors, 2, "api.bind", "not an ip:port");
        AssertError(errors, 3, "api.max-batch", "out of range");
        AssertError(errors, 4, "api.idempotency-window", "not a duration");
        AssertError(errors, 5, "api.colour", "unknown key");
        AssertError(errors, 6, "api.client.app.token", "required");
        AssertError(errors, 7, "api.client.app.allowed-senders", "'nobody'");
        AssertError(errors, 7, "api.client.app.allowed-senders", "'@'");
        AssertError(errors, 8, "api.client.app.default-priority", "'asap'");
        AssertError(errors, 9, "api.client.app.rate", "not a rate");
        AssertError(errors, 10, "api.client.app.rate-policy", "'drop'");
        AssertError(errors, 11, "api.client.app.max-message-size", "not a size");
        AssertError(errors, 12, "api.client.app.webhook", "not an http");
        AssertError(errors, 15, "api.client.hooked.webhook", "webhook-secret");
        AssertError(errors, 17, "templates.path", "does not exist");
    }

    [Fact]
    public void A_tiny_or_malformed_max_batch_size_is_an_error()
    {
        AssertError(LoadErrors("[api]\nmax-batch-size = 100\n" + MinimalQueue), 2, "api.max-batch-size", "at least 1KB");
        AssertError(LoadErrors("[api]\nmax-batch-size = \"lots\"\n" + MinimalQueue), 2, "api.max-batch-size", "not a size");
    }

    [Fact]
    public void An_api_bind_without_clients_is_an_error()
    {
        var errors = LoadErrors("[api]\nbind = \"127.0.0.1:0\"\n" + MinimalQueue);
        AssertError(errors, 2, "api.bind", "no [api.client.NAME]");
    }
}
