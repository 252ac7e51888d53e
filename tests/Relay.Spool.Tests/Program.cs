// Entry point used only when the crash test starts this assembly as a child process.
namespace Relay.Spool.Tests;

public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        if (args.Length >= 2 && args[0] == "crash-child") return await CrashChild.RunAsync(args[1]);
        Console.Error.WriteLine("usage: dotnet Relay.Spool.Tests.dll crash-child <dir>");
        return 2;
    }
}
