using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;
using MailKit.Net.Smtp;
using MimeKit;
using Xunit.Abstractions;

namespace Relay.EndToEnd.Tests;

/// <summary>
/// DESIGN.md's promise under SIGKILL: a real relay process is killed while it accepts and delivers;
/// after a restart on the same spool every message that got 250 is delivered, and nothing is sent
/// twice except what was in flight at the kill.
/// </summary>
public sealed partial class CrashTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly RelayWorld _world = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _world.DisposeAsync();

    [GeneratedRegex(@"listening: smtp on 127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningLine();

    private sealed class ChildRelay : IDisposable
    {
        public required Process Process { get; init; }
        public required int Port { get; init; }
        public void Dispose()
        {
            try { if (!Process.HasExited) Process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            Process.Dispose();
        }
    }

    private async Task<ChildRelay> StartChildAsync(string configPath)
    {
        var info = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "relay.dll"), "serve", "--config", configPath])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment.Remove("RELAY_ADMIN_TOKEN");
        var process = Process.Start(info)!;
        var port = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            if (ListeningLine().Match(e.Data) is { Success: true } m) port.TrySetResult(int.Parse(m.Groups[1].Value));
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) output.WriteLine("relay stderr: " + e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var started = await Task.WhenAny(port.Task, process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(30)));
        Assert.True(started == port.Task, "the relay child did not start listening");
        return new ChildRelay { Process = process, Port = await port.Task };
    }

    [Fact]
    public async Task Sigkill_while_accepting_and_delivering_loses_nothing_that_got_250()
    {
        var sink = _world.Remote("127.0.0.2");
        sink.DataDelay = TimeSpan.FromMilliseconds(5);   // keep deliveries in flight when the kill lands
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        var config = _world.WriteConfig(_world.Config());

        var acknowledged = new ConcurrentBag<string>();
        using (var first = await StartChildAsync(config))
        {
            using var stopSending = new CancellationTokenSource();
            var senders = Enumerable.Range(0, 4).Select(s => Task.Run(async () =>
            {
                for (var n = 0; !stopSending.IsCancellationRequested && n < 10_000; n++)
                {
                    var id = $"{s}-{n}@crash.test";
                    try
                    {
                        using var client = new SmtpClient { Timeout = 10_000 };
                        await client.ConnectAsync("127.0.0.1", first.Port, MailKit.Security.SecureSocketOptions.None);
                        var message = new MimeMessage();
                        message.From.Add(MailboxAddress.Parse("app@origin.test"));
                        message.To.Add(MailboxAddress.Parse($"user{n % 3}@remote.test"));
                        message.MessageId = id;
                        message.Subject = "crash test " + id;
                        // Most inline in the journal, one in five over the inline limit (a file of its own).
                        message.Body = new TextPart("plain") { Text = new string('x', SizeOf(id)) };
                        await client.SendAsync(message);   // returns only after our 250
                        acknowledged.Add(id);
                        await client.DisconnectAsync(true);
                    }
                    catch (Exception) when (stopSending.IsCancellationRequested || first.Process.HasExited)
                    {
                        return;
                    }
                    catch (Exception e) when (e is IOException or MailKit.ServiceNotConnectedException or MailKit.Net.Smtp.SmtpProtocolException or System.Net.Sockets.SocketException)
                    {
                        return;   // the relay died under us: this message never got 250
                    }
                }
            })).ToArray();

            await RelayWorld.WaitUntil(() => acknowledged.Count >= 150 && sink.Messages.Count >= 30, TimeSpan.FromSeconds(60),
                "mail flowing in and out before the kill");
            first.Process.Kill();   // SIGKILL: no shutdown code runs
            await first.Process.WaitForExitAsync();
            stopSending.Cancel();
            await Task.WhenAll(senders);
        }

        var deliveredBeforeRestart = sink.Messages.Count;
        using (await StartChildAsync(config))
        {
            var expected = acknowledged.ToHashSet();
            await RelayWorld.WaitUntil(() => expected.IsSubsetOf(DeliveredIds(sink)), TimeSpan.FromSeconds(90),
                $"all {expected.Count} acknowledged messages to arrive after the restart");
        }

        var all = sink.Messages.Select(m => MessageIdOf(m.Content)).ToList();
        var lost = acknowledged.Count(id => !all.Contains(id));
        var duplicated = all.Count - all.Distinct().Count();
        output.WriteLine($"acknowledged={acknowledged.Count} delivered_before_kill={deliveredBeforeRestart} delivered_total={all.Count} lost={lost} duplicated={duplicated}");
        Assert.Equal(0, lost);
        // Whole, whichever way it was stored: no body cut short by the kill.
        Assert.All(sink.Messages, m =>
        {
            var delivered = MimeMessage.Load(new MemoryStream(m.Content));
            Assert.Equal(new string('x', SizeOf(delivered.MessageId!)), delivered.TextBody!.TrimEnd('\r', '\n'));
        });
        // Only deliveries in flight at the kill may repeat: at most the queue's threads-per-node (10).
        Assert.InRange(duplicated, 0, 10);
    }

    private static int SizeOf(string id) => int.Parse(id[(id.IndexOf('-') + 1)..id.IndexOf('@')]) % 5 == 4 ? 100_000 : 2000;

    private static HashSet<string> DeliveredIds(Relay.Delivery.Tests.TestSmtpServer sink) =>
        sink.Messages.Select(m => MessageIdOf(m.Content)).ToHashSet();

    private static string MessageIdOf(byte[] content) =>
        MimeMessage.Load(new MemoryStream(content)).MessageId ?? "";
}
