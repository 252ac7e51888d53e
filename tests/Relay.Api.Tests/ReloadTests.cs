// RelayHost reload and the HTTP API: clients and templates apply at once (a revoked token is refused on the next
// request); the bind, the idempotency window and webhooks are named as needing a restart and stay as started.
using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Config;
using Relay.Delivery.Tests;

namespace Relay.Api.Tests;

public sealed class ReloadTests : IAsyncLifetime
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("relay-api-reload-");
    private readonly TestDns _dns = new();
    private string ConfigPath => Path.Combine(_dir.FullName, "relay.toml");
    private RelayHost _host = null!;

    private string Toml(string clients, string bind = "127.0.0.1:0", string window = "24h") => $$"""
        [server]
        hostname = "relay.example.test"
        [spool]
        path = "{{_dir.FullName}}/spool"
        [resolver]
        nameservers = ["{{_dns.EndPoint}}"]
        timeout = "2s"
        [api]
        bind = "{{bind}}"
        idempotency-window = "{{window}}"
        {{clients}}
        [queue.strategy]
        schedule = [ { else = "'default'" } ]
        [queue.schedule.default]
        retry = ["1s"]
        [queue.virtual.default]
        threads-per-node = 1
        """;

    public async Task InitializeAsync()
    {
        await File.WriteAllTextAsync(ConfigPath, Toml("""
            [api.client.shop]
            token = "shop-token"
            [api.client.crm]
            token = "crm-token"
            """));
        var loaded = ConfigLoader.LoadFile(ConfigPath);
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        var settings = loaded.Settings!;
        _host = await RelayHost.StartAsync(settings, StageFactory.CreateDeliveryAgent(settings, NullLoggerFactory.Instance),
            StageFactory.CreateReports(settings, NullLoggerFactory.Instance), NullLoggerFactory.Instance);
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        await _dns.DisposeAsync();
        try { _dir.Delete(true); } catch (IOException) { }
    }

    private async Task<HttpStatusCode> TemplatesAsync(string token)
    {
        using var http = new HttpClient { BaseAddress = _host.Api!.BaseAddress };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using var response = await http.GetAsync("/api/v1/templates");
        return response.StatusCode;
    }

    [Fact]
    public async Task Reload_revokes_a_removed_token_at_once_and_names_bind_window_and_webhook_as_needing_restart()
    {
        Assert.Equal(HttpStatusCode.OK, await TemplatesAsync("shop-token"));   // cached as verified
        var bind = _host.Settings.Api.Bind;

        await File.WriteAllTextAsync(ConfigPath, Toml("""
            [api.client.crm]
            token = "crm-token-2"
            webhook = "http://127.0.0.1:9/hook"
            webhook-secret = "s"
            """, bind: "127.0.0.1:1", window: "1h"));
        var result = await _host.ReloadAsync(CancellationToken.None);

        Assert.True(result.Ok, string.Join("\n", result.Errors));
        Assert.Contains("[api] clients and [templates] applied", result.Summary);
        Assert.Contains("api.bind", result.Summary);
        Assert.Contains("api.idempotency-window", result.Summary);
        Assert.Contains("api.client.crm.webhook", result.Summary);
        Assert.Equal(HttpStatusCode.Unauthorized, await TemplatesAsync("shop-token"));
        Assert.Equal(HttpStatusCode.Unauthorized, await TemplatesAsync("crm-token"));
        Assert.Equal(HttpStatusCode.OK, await TemplatesAsync("crm-token-2"));
        Assert.Equal(bind, _host.Settings.Api.Bind);                            // the running listener, not the file's
        Assert.Equal(TimeSpan.FromHours(24), _host.Settings.Api.IdempotencyWindow);
        Assert.Equal(["crm"], _host.Settings.Api.Clients.Keys);
    }

    [Fact]
    public async Task A_reload_without_api_changes_does_not_touch_the_api()
    {
        var result = await _host.ReloadAsync(CancellationToken.None);
        Assert.True(result.Ok, string.Join("\n", result.Errors));
        Assert.DoesNotContain("[api]", result.Summary);
        Assert.DoesNotContain("needs restart", result.Summary);
        Assert.Equal(HttpStatusCode.OK, await TemplatesAsync("shop-token"));
    }

    [Fact]
    public async Task Adding_and_removing_clients_without_webhooks_does_not_need_a_restart()
    {
        await File.WriteAllTextAsync(ConfigPath, Toml("""
            [api.client.crm]
            token = "crm-token"
            [api.client.billing]
            token = "billing-token"
            """));
        var result = await _host.ReloadAsync(CancellationToken.None);

        Assert.True(result.Ok, string.Join("\n", result.Errors));
        Assert.Contains("[api] clients and [templates] applied", result.Summary);
        Assert.DoesNotContain("needs restart", result.Summary);
        Assert.DoesNotContain("webhook", result.Summary);
        Assert.Equal(HttpStatusCode.Unauthorized, await TemplatesAsync("shop-token"));
        Assert.Equal(HttpStatusCode.OK, await TemplatesAsync("billing-token"));
    }
}
