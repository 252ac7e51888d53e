using Relay.Config.Settings;

namespace Relay.Config;

/// <summary>One problem in a config file, printed as <c>file:line: key: message</c>.</summary>
public sealed record ConfigError(string File, int Line, string Key, string Message)
{
    public override string ToString() => $"{File}:{Line}: {Key}: {Message}";
}

/// <summary>Either settings or the full list of what is wrong (never both).</summary>
public sealed record ConfigLoadResult(RelaySettings? Settings, IReadOnlyList<ConfigError> Errors)
{
    public bool Ok => Settings is not null && Errors.Count == 0;
}

/// <summary>Reads a TOML config file into validated <see cref="RelaySettings"/>, collecting every error.</summary>
public static partial class ConfigLoader
{
    /// <summary>Loads and validates the file at <paramref name="path"/>.</summary>
    public static ConfigLoadResult LoadFile(string path) => throw new NotImplementedException();

    /// <summary>Parses TOML text; relative paths in it resolve against <paramref name="baseDirectory"/> (default: the current directory).</summary>
    public static ConfigLoadResult Parse(string text, string path = "config.toml", string? baseDirectory = null) => throw new NotImplementedException();
}
