namespace Relay.Commands;

/// <summary>Parses <c>relay [command] [options]</c> and runs the command. Exit codes: 0 ok, 1 error, 2 usage.</summary>
public static class CommandLine
{
    public const string DefaultConfigPath = "config/config.toml";

    public const string Usage = """
        usage:
          relay [serve] [--config FILE]                 run the MTA (default config: config/config.toml)
          relay config check [--config FILE]            validate the config; prints file:line: key: message
          relay route --rcpt ADDR [--sender ADDR] [--priority N] [--header 'Name: value']...
                      [--source smtp|dsn|api] [--size BYTES] [--remote-ip IP] [--listener NAME]
                      [--auth USER] [--config FILE]     show the schedule a recipient would get
          relay queue list|show|retry|cancel ...        operator view of the queue (admin API)
        """;

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        Options options;
        try
        {
            options = Options.Parse(args);
        }
        catch (UsageException e)
        {
            await stderr.WriteLineAsync($"relay: {e.Message}\n{Usage}");
            return 2;
        }

        switch (options.Positional)
        {
            case [] or ["serve"]:
                return await ServeCommand.RunAsync(options, stdout, stderr, cancellationToken);
            case ["config", "check"]:
                return ConfigCheckCommand.Run(options, stdout, stderr);
            case ["route"]:
                return RouteCommand.Run(options, stdout, stderr);
            case ["help"] or ["--help"]:
                await stdout.WriteLineAsync(Usage);
                return 0;
            case ["queue", ..]:
                return await QueueCommand.RunAsync(options, stdout, stderr, cancellationToken);
            default:
                await stderr.WriteLineAsync($"relay: unknown command '{string.Join(' ', options.Positional)}'\n{Usage}");
                return 2;
        }
    }
}

public sealed class UsageException(string message) : Exception(message);

/// <summary>Positional words plus <c>--name value</c> options (repeatable ones keep every value).</summary>
public sealed class Options
{
    private static readonly HashSet<string> Flags = ["json", "bounce", "help"];

    public List<string> Positional { get; } = [];
    public Dictionary<string, List<string>> Named { get; } = new(StringComparer.Ordinal);

    public string ConfigPath => Get("config") ?? DefaultConfigPathOrEnvironment();

    public string? Get(string name) => Named.TryGetValue(name, out var values) ? values[^1] : null;
    public IReadOnlyList<string> GetAll(string name) => Named.TryGetValue(name, out var values) ? values : [];
    public bool Has(string name) => Named.ContainsKey(name);

    private static string DefaultConfigPathOrEnvironment() =>
        Environment.GetEnvironmentVariable("RELAY_CONFIG") is { Length: > 0 } fromEnv ? fromEnv : CommandLine.DefaultConfigPath;

    public static Options Parse(string[] args)
    {
        var options = new Options();
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal) || arg == "--")
            {
                options.Positional.Add(arg);
                continue;
            }
            var name = arg[2..];
            string value;
            var eq = name.IndexOf('=');
            if (eq >= 0) { value = name[(eq + 1)..]; name = name[..eq]; }
            else if (Flags.Contains(name)) value = "true";
            else if (i + 1 < args.Length) value = args[++i];
            else throw new UsageException($"option --{name} needs a value");
            if (!options.Named.TryGetValue(name, out var list)) options.Named[name] = list = [];
            list.Add(value);
        }
        return options;
    }
}
