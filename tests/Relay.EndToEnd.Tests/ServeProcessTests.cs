// A real `relay serve --log-format json` child process: one JSON object per log line with the queue id on the
// accepted and delivery lines, SIGHUP reloads (a broken config is refused), SIGTERM stops gracefully (exit 0).
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using MailKit.Net.Smtp;
using MimeKit;
using Xunit.Abstractions;

namespace Relay.EndToEnd.Tests;

public sealed partial class ServeProcessTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly RelayWorld _world = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _world.DisposeAsync();

    [GeneratedRegex(@"listening: smtp on 127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningLine();

    [GeneratedRegex("queued as ([0-9a-f]{16})")]
    private static partial Regex QueuedAs();

    private static void Signal(Process process, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", process.Id.ToString()]) { UseShellExecute = false })!;
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    private static async Task WaitForLine(ConcurrentQueue<string> lines, Func<string, bool> match, string what)
    {
        await RelayWorld.WaitUntil(() => lines.Any(match), TimeSpan.FromSeconds(30), what);
    }

    [Fact]
    public async Task Json_logs_carry_the_queue_id_sighup_reloads_and_sigterm_stops_gracefully()
    {
        var sink = _world.Remote("127.0.0.2");
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        var configText = _world.Config();
        var config = _world.WriteConfig(configText);

        var info = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "relay.dll"), "serve", "--config", config, "--log-format", "json"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment.Remove("RELAY_ADMIN_TOKEN");
        using var process = Process.Start(info)!;
        try
        {
            var lines = new ConcurrentQueue<string>();
            var port = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lines.Enqueue(e.Data);
                if (ListeningLine().Match(e.Data) is { Success: true } m) port.TrySetResult(int.Parse(m.Groups[1].Value));
            };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) output.WriteLine("relay stderr: " + e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var started = await Task.WhenAny(port.Task, process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(30)));
            Assert.True(started == port.Task, "the relay child did not start listening");

            var message = new MimeMessage();
            message.From.Add(MailboxAddress.Parse("app@origin.test"));
            message.To.Add(MailboxAddress.Parse("user@remote.test"));
            message.Subject = "json logs";
            message.Body = new TextPart("plain") { Text = "hello\r\n" };
            string id;
            using (var client = new SmtpClient())
            {
                await client.ConnectAsync("127.0.0.1", await port.Task, MailKit.Security.SecureSocketOptions.None);
                id = QueuedAs().Match(await client.SendAsync(message)).Groups[1].Value;
                await client.DisconnectAsync(true);
            }
            await WaitForLine(lines, l => l.Contains(id) && l.Contains("status=sent"), "the delivery line");

            // SIGHUP with a broken config: refused and logged, the relay keeps running.
            File.WriteAllText(config, configText + "\n[session]\nmax-recipients = \"many\"\n");
            Signal(process, "HUP");
            await WaitForLine(lines, l => l.Contains("reload refused") && l.Contains("max-recipients"), "the refused reload");
            Assert.False(process.HasExited);

            Signal(process, "TERM");
            Assert.True(process.WaitForExit(30_000), "the relay did not stop on SIGTERM");
            process.WaitForExit();   // drain the redirected output
            Assert.Equal(0, process.ExitCode);

            // Every line is one JSON object; the accepted and delivery lines carry the queue id as a field.
            var entries = lines.Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement).ToList();
            Assert.All(entries, e => Assert.Equal(JsonValueKind.Object, e.ValueKind));
            var withId = entries.Where(e => e.TryGetProperty("State", out var s) && s.TryGetProperty("MessageId", out var m) && m.GetString() == id)
                .Select(e => e.GetProperty("Message").GetString()!).ToList();
            Assert.Contains(withId, m => m.Contains("from=<app@origin.test>") && m.Contains("nrcpt=1") && m.Contains("priority=0") && m.Contains("schedule=default"));
            Assert.Contains(withId, m => m.Contains("to=<user@remote.test>") && m.Contains("relay=mx.remote.test[127.0.0.2]:") && m.Contains("delay=")
                                         && m.Contains("dsn=2.0.0, status=sent"));
            Assert.Contains(entries, e => e.GetProperty("Message").GetString() == "stopped");
            Assert.Single(sink.Messages);
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }
}
