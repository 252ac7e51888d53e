using Relay.Config;

namespace Relay.Commands;

/// <summary><c>relay serve</c>: loads the config (refusing to start on any error) and runs the relay until stopped.</summary>
public static class ServeCommand
{
    public static async Task<int> RunAsync(Options options, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var loaded = ConfigLoader.LoadFile(options.ConfigPath);
        if (!loaded.Ok)
        {
            foreach (var error in loaded.Errors) await stderr.WriteLineAsync(error.ToString());
            await stderr.WriteLineAsync($"relay: not starting: {loaded.Errors.Count} config error(s)");
            return 1;
        }
        var settings = loaded.Settings!;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        await stdout.WriteLineAsync($"relay: config {options.ConfigPath} ok; hostname {settings.Server.Hostname}; spool {settings.Spool.Path}");
        await stdout.WriteLineAsync("relay: the SMTP listener and delivery stages are not wired yet; waiting for Ctrl-C");
        try { await Task.Delay(Timeout.Infinite, stop.Token); } catch (OperationCanceledException) { }
        return 0;
    }
}
