using Relay.Config;

namespace Relay.Commands;

/// <summary><c>relay config check</c>: every problem as <c>file:line: key: message</c>; exit 1 if any.</summary>
public static class ConfigCheckCommand
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var result = ConfigLoader.LoadFile(options.ConfigPath);
        if (!result.Ok)
        {
            foreach (var error in result.Errors)
                stderr.WriteLine(error);
            stderr.WriteLine($"{options.ConfigPath}: {result.Errors.Count} error(s)");
            return 1;
        }
        var s = result.Settings!;
        stdout.WriteLine($"{options.ConfigPath}: ok ({s.Queue.Schedules.Count} schedules, {s.Queue.VirtualQueues.Count} virtual queues, {s.Server.Listeners.Count} listeners)");
        return 0;
    }
}
