using Relay.Config;
using Relay.Config.Settings;

namespace Relay.Config.Tests;

internal static class ConfigFixtures
{
    /// <summary>A minimal valid [queue] block; tests add or replace sections around it.</summary>
    public const string MinimalQueue = """
        [queue.strategy]
        schedule = [ { if = "priority >= 6", then = "'urgent'" },
                     { else = "'default'" } ]

        [queue.schedule.urgent]
        queue-name = "urgent"
        retry = ["30s", "1m"]
        notify = ["10m"]
        expire = "1h"

        [queue.schedule.default]
        queue-name = "default"

        [queue.virtual.urgent]
        threads-per-node = 5

        [queue.virtual.default]
        threads-per-node = 3
        """;

    public static string RepoRoot { get; } = FindRepoRoot();

    private static string FindRepoRoot()
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "Relay.sln")))
            dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("Relay.sln not found above the test binaries");
    }

    public static RelaySettings LoadOk(string toml, string? baseDirectory = null)
    {
        var result = ConfigLoader.Parse(toml, "test.toml", baseDirectory);
        Assert.True(result.Ok, "expected a valid config, got:\n" + string.Join("\n", result.Errors));
        return result.Settings!;
    }

    public static IReadOnlyList<ConfigError> LoadErrors(string toml, string? baseDirectory = null)
    {
        var result = ConfigLoader.Parse(toml, "test.toml", baseDirectory);
        Assert.False(result.Ok, "expected errors, the config loaded");
        Assert.Null(result.Settings);
        Assert.NotEmpty(result.Errors);
        return result.Errors;
    }

    /// <summary>Asserts one error names this line and key and its message contains the text.</summary>
    public static void AssertError(IReadOnlyList<ConfigError> errors, int line, string key, string messagePart)
    {
        Assert.True(errors.Any(e => e.Line == line && e.Key == key && e.Message.Contains(messagePart, StringComparison.OrdinalIgnoreCase)),
            $"no error at line {line} for key '{key}' containing '{messagePart}'; got:\n" + string.Join("\n", errors));
    }
}
