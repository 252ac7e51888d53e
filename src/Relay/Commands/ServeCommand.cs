using Microsoft.Extensions.Logging;
using Relay.Config;

namespace Relay.Commands;

/// <summary><c>relay serve</c>: loads the config (refusing to start on any error) and runs the relay until SIGINT/SIGTERM.</summary>
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
        using var loggerFactory = LoggerFactory.Create(builder =>
        {
            builder.SetMinimumLevel(options.Get("log-level") is { } level && Enum.TryParse<LogLevel>(level, true, out var parsed) ? parsed : LogLevel.Information);
            builder.AddFilter("Microsoft", LogLevel.Warning);
            if (options.Get("log-format") == "json") builder.AddJsonConsole();
            else builder.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ "; o.UseUtcTimestamp = true; });
        });
        var log = loggerFactory.CreateLogger("Relay");

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });

        RelayHost host;
        try
        {
            host = await RelayHost.StartAsync(settings, StageFactory.CreateDeliveryAgent(settings, loggerFactory),
                StageFactory.CreateReports(settings, loggerFactory), loggerFactory, TimeProvider.System, stop.Token);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            log.LogCritical("relay: cannot start: {Error}", e.Message);
            return 1;
        }
        using var sighup = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGHUP, ctx => { ctx.Cancel = true; _ = host.ReloadAsync(CancellationToken.None); });
        await using (host)
        {
            log.LogInformation("relay started: config {Config}, hostname {Hostname}, spool {Spool}",
                options.ConfigPath, settings.Server.Hostname, settings.Spool.Path);
            try { await Task.Delay(Timeout.Infinite, stop.Token); } catch (OperationCanceledException) { }
            log.LogInformation("relay stopping");
            // Graceful: stop accepting, let sessions and deliveries in flight finish within [server] shutdown-timeout.
            using var grace = new CancellationTokenSource(host.Settings.Server.ShutdownTimeout);
            await host.StopAsync(grace.Token);
        }
        return 0;
    }
}
