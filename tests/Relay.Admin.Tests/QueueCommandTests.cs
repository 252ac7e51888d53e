// QueueCommandTests: `relay queue list|show|retry|cancel` against the running admin API, with the address and
// token from --url/--token and from a config file; output captured as the operator would see it.
using System.Text.Json;
using Relay.Admin.Tests.Harness;
using Relay.Commands;

namespace Relay.Admin.Tests;

public sealed class QueueCommandTests : IAsyncLifetime
{
    private AdminHarness _h = null!;

    public async Task InitializeAsync() => _h = await AdminHarness.StartAsync();
    public async Task DisposeAsync() => await _h.DisposeAsync();

    private async Task<(int Exit, string Out, string Err)> RunAsync(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var all = args.Concat(args.Contains("--config") ? [] : ["--url", _h.BaseAddress.ToString(), "--token", AdminHarness.Token]).ToArray();
        var exit = await QueueCommand.RunAsync(Options.Parse(all), stdout, stderr, CancellationToken.None);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task List_prints_a_postqueue_style_table()
    {
        var a = await _h.SendAsync("app@sender.test", "defer1@remote.test", "ok@remote.test");
        var b = await _h.SendAsync("", "bounce@remote.test");
        await _h.IdleAsync();

        var (exit, output, err) = await RunAsync("queue", "list");
        Assert.True(exit == 0, err);
        var lines = output.Split('\n');
        Assert.StartsWith("-Queue ID-", lines[0]);
        Assert.Matches($@"^{a}\s+\d+ 2026-11-23 09:00:00\s+0 app@sender.test$", lines[1]);
        Assert.Contains("(450 4.2.0 mailbox busy)", output);
        Assert.Contains("defer1@remote.test  [default/default, pending, 1 attempt(s), next 2026-11-23 10:00:00]", output);
        Assert.Contains("ok@remote.test  [default/default, delivered, 1 attempt(s)]", output);
        Assert.Matches($@"(?m)^{b}!\s+\d+ .* <>$", output);   // dead letter mark, null sender
        Assert.Contains("(550 5.1.1 no such user)", output);
        Assert.Contains("in 2 Requests, 3 Recipients.", output);

        var (_, onlyFailed, _) = await RunAsync("queue", "list", "--status", "failed");
        Assert.DoesNotContain(a, onlyFailed);
        Assert.Contains(b, onlyFailed);
    }

    [Fact]
    public async Task List_filters_by_queue_and_domain_and_prints_json()
    {
        var a = await _h.SendAsync("app@sender.test", "defer1@remote.test");
        var b = await _h.SendAsync("app@sender.test", "defer-vip@vip.test");
        await _h.IdleAsync();

        var (exit, output, _) = await RunAsync("queue", "list", "--queue", "urgent", "--json");
        Assert.Equal(0, exit);
        var json = JsonDocument.Parse(output).RootElement;
        Assert.Equal([b], json.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("id").GetString()));
        Assert.Equal("urgent", json.GetProperty("messages")[0].GetProperty("recipients")[0].GetProperty("queue").GetString());

        var (_, table, _) = await RunAsync("queue", "list", "--domain", "remote.test");
        Assert.Contains(a, table);
        Assert.DoesNotContain(b, table);

        var (_, empty, _) = await RunAsync("queue", "list", "--domain", "nowhere.test");
        Assert.Equal("Mail queue is empty\n", empty);
    }

    [Fact]
    public async Task Show_retry_and_cancel_act_on_one_message()
    {
        var id = await _h.SendAsync("app@sender.test", "defer1@remote.test");
        await _h.IdleAsync();

        var (exit, show, _) = await RunAsync("queue", "show", id);
        Assert.Equal(0, exit);
        Assert.Contains($"id:        {id}", show);
        Assert.Contains("status:    pending", show);
        Assert.Contains("defer1@remote.test  pending  queue=default schedule=default attempts=1", show);
        Assert.Contains("last error: 450 4.2.0 mailbox busy (mx.remote.test)", show);
        Assert.Contains("#1 defer1@remote.test  temporary  450 4.2.0 mailbox busy", show);

        var (_, showJson, _) = await RunAsync("queue", "show", id, "--json");
        Assert.Equal(id, JsonDocument.Parse(showJson).RootElement.GetProperty("id").GetString());

        var (retryExit, retry, _) = await RunAsync("queue", "retry", id);
        Assert.Equal(0, retryExit);
        Assert.Equal($"{id}: retry now (1 recipient(s))\n", retry.ReplaceLineEndings("\n"));
        await Eventually.TrueAsync(() => _h.Agent.Calls.Count == 2, "the retry reached the agent");
        await _h.IdleAsync();

        var (cancelExit, cancel, _) = await RunAsync("queue", "cancel", id, "--bounce");
        Assert.Equal(0, cancelExit);
        Assert.Equal($"{id}: removed from the queue; 1 pending recipient(s) bounced\n", cancel.ReplaceLineEndings("\n"));
        Assert.Single(_h.Reports.Final);

        var (missingExit, _, missing) = await RunAsync("queue", "show", id);
        Assert.Equal(1, missingExit);
        Assert.Contains($"relay: queue: {id}: no message {id} in the queue", missing);
    }

    private const string QueueSection = """
        [queue.strategy]
        schedule = [ { else = "'default'" } ]
        [queue.schedule.default]
        queue-name = "default"
        [queue.virtual.default]
        threads-per-node = 10
        """;

    [Fact]
    public async Task Address_and_token_come_from_the_config_file()
    {
        var id = await _h.SendAsync("app@sender.test", "defer1@remote.test");
        await _h.IdleAsync();
        var config = Path.Combine(Path.GetTempPath(), $"relay-admin-{Guid.NewGuid():n}.toml");
        await File.WriteAllTextAsync(config, $"""
            [admin]
            bind = "{_h.Server.EndPoint}"
            token = "{AdminHarness.Token}"
            {QueueSection}
            """);
        try
        {
            var (exit, output, err) = await RunAsync("queue", "list", "--config", config);
            Assert.True(exit == 0, err);
            Assert.Contains(id, output);

            await File.WriteAllTextAsync(config, $"""
                [admin]
                bind = "{_h.Server.EndPoint}"
                token = "not-the-token"
                {QueueSection}
                """);
            var (refusedExit, _, refused) = await RunAsync("queue", "list", "--config", config);
            Assert.Equal(1, refusedExit);
            Assert.Contains("the admin API refused the token", refused);
        }
        finally
        {
            File.Delete(config);
        }
    }

    [Fact]
    public async Task Usage_errors_and_an_unreachable_api_are_reported()
    {
        var (usageExit, _, usage) = await RunAsync("queue", "frobnicate");
        Assert.Equal(2, usageExit);
        Assert.Contains("relay queue list", usage);

        var stderr = new StringWriter();
        var exit = await QueueCommand.RunAsync(Options.Parse(["queue", "list", "--url", "http://127.0.0.1:1/", "--token", "x"]),
                                               new StringWriter(), stderr, CancellationToken.None);
        Assert.Equal(1, exit);
        Assert.Contains("cannot reach the admin API at http://127.0.0.1:1/", stderr.ToString());

        var (retryExit, _, nothing) = await RunAsync("queue", "retry", "ffffffffffffffff");
        Assert.Equal(1, retryExit);
        Assert.Contains("no message ffffffffffffffff", nothing);
    }
}
