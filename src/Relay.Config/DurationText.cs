namespace Relay.Config;

/// <summary>Writes durations the way the config file spells them ("90s" → "1m30s").</summary>
public static class DurationText
{
    public static string Format(TimeSpan value)
    {
        if (value == TimeSpan.Zero) return "0s";
        var parts = new List<string>();
        if (value.Days > 0) parts.Add($"{value.Days}d");
        if (value.Hours > 0) parts.Add($"{value.Hours}h");
        if (value.Minutes > 0) parts.Add($"{value.Minutes}m");
        if (value.Seconds > 0) parts.Add($"{value.Seconds}s");
        if (value.Milliseconds > 0) parts.Add($"{value.Milliseconds}ms");
        return string.Concat(parts);
    }
}
