// Section: typed reads from one TOML table, recording which keys were used so that every
// key nobody asked for can be reported as unknown (typos must not silently do nothing).
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;

namespace Relay.Config.Toml;

/// <summary>Collects <see cref="ConfigError"/>s for one file.</summary>
internal sealed class ErrorSink(string file)
{
    public string File { get; } = file;
    public List<ConfigError> Errors { get; } = [];
    public void Add(int line, string key, string message) => Errors.Add(new ConfigError(File, line, key, message));
}

/// <summary>A view of one table under a dotted key prefix such as <c>queue.schedule.urgent</c>.</summary>
internal sealed partial class Section(TomlTableNode node, string path, ErrorSink errors)
{
    private readonly HashSet<string> _read = [];

    public string Path { get; } = path;
    public int Line => node.Line;
    public ErrorSink Errors => errors;
    public IEnumerable<string> Keys => node.Entries.Select(e => e.Key);

    public string KeyPath(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    public void Error(string key, string message) => errors.Add(LineOf(key), KeyPath(key), message);

    public int LineOf(string key) => node.Get(key)?.Line ?? node.Line;

    public bool Has(string key) => node.Get(key) is not null;

    public TomlNode? Raw(string key)
    {
        _read.Add(key);
        return node.Get(key);
    }

    /// <summary>Reports every key of this table that was never read (call after reading).</summary>
    public void ReportUnknownKeys()
    {
        foreach (var (key, value) in node.Entries)
            if (!_read.Contains(key))
                errors.Add(value.Line, KeyPath(key), "unknown key");
        var seen = new HashSet<string>();
        foreach (var (key, value) in node.Entries)
            if (!seen.Add(key))
                errors.Add(value.Line, KeyPath(key), "key is defined twice");
    }

    public Section? Table(string key)
    {
        switch (Raw(key))
        {
            case null: return null;
            case TomlTableNode t: return new Section(t, KeyPath(key), errors);
            case var other:
                errors.Add(other.Line, KeyPath(key), "expected a table");
                return null;
        }
    }

    /// <summary>The sub-tables of a table of named tables, e.g. every <c>[queue.schedule.NAME]</c>.</summary>
    public IEnumerable<(string Name, Section Section)> NamedTables()
    {
        foreach (var (name, value) in node.Entries.ToList())
        {
            _read.Add(name);
            if (value is TomlTableNode t) yield return (name, new Section(t, KeyPath(name), errors));
            else errors.Add(value.Line, KeyPath(name), "expected a table");
        }
    }

    public string? String(string key, string? fallback = null)
    {
        var raw = Raw(key);
        if (raw is null) return fallback;
        if (raw is TomlScalar { Value: string s }) return s;
        errors.Add(raw.Line, KeyPath(key), "expected a string");
        return fallback;
    }

    public bool Bool(string key, bool fallback)
    {
        var raw = Raw(key);
        if (raw is null) return fallback;
        if (raw is TomlScalar { Value: bool b }) return b;
        errors.Add(raw.Line, KeyPath(key), "expected true or false");
        return fallback;
    }

    public long Integer(string key, long fallback, long min = long.MinValue, long max = long.MaxValue)
    {
        var raw = Raw(key);
        if (raw is null) return fallback;
        if (raw is TomlScalar { Value: long n })
        {
            if (n >= min && n <= max) return n;
            errors.Add(raw.Line, KeyPath(key), $"{n} is out of range {min}..{max}");
            return fallback;
        }
        errors.Add(raw.Line, KeyPath(key), "expected an integer");
        return fallback;
    }

    public TimeSpan Duration(string key, TimeSpan fallback)
    {
        var raw = Raw(key);
        if (raw is null) return fallback;
        return ParseDurationNode(raw, KeyPath(key)) ?? fallback;
    }

    public long Size(string key, long fallback)
    {
        var raw = Raw(key);
        if (raw is null) return fallback;
        switch (raw)
        {
            case TomlScalar { Value: long n } when n >= 0: return n;
            case TomlScalar { Value: string s } when TryParseSize(s, out var size): return size;
            default:
                errors.Add(raw.Line, KeyPath(key), $"'{Describe(raw)}' is not a size (e.g. \"25MB\", \"512KB\", 1048576)");
                return fallback;
        }
    }

    /// <summary>A list of strings; a single string is accepted as a one-element list.</summary>
    public List<string>? StringList(string key)
    {
        var raw = Raw(key);
        switch (raw)
        {
            case null: return null;
            case TomlScalar { Value: string one }: return [one];
            case TomlList list:
                var result = new List<string>();
                foreach (var item in list.Items)
                {
                    if (item is TomlScalar { Value: string s }) result.Add(s);
                    else errors.Add(item.Line, KeyPath(key), "expected a list of strings");
                }
                return result;
            default:
                errors.Add(raw.Line, KeyPath(key), "expected a list of strings");
                return null;
        }
    }

    public List<TimeSpan>? DurationList(string key)
    {
        var raw = Raw(key);
        switch (raw)
        {
            case null: return null;
            case TomlList list:
                var result = new List<TimeSpan>();
                foreach (var item in list.Items)
                    if (ParseDurationNode(item, KeyPath(key)) is { } d) result.Add(d);
                return result;
            case TomlScalar:
                return ParseDurationNode(raw, KeyPath(key)) is { } one ? [one] : [];
            default:
                errors.Add(raw.Line, KeyPath(key), "expected a list of durations");
                return null;
        }
    }

    public List<IPNetwork>? Networks(string key)
    {
        var strings = StringList(key);
        if (strings is null) return null;
        var result = new List<IPNetwork>();
        foreach (var s in strings)
        {
            if (TryParseNetwork(s, out var net)) result.Add(net);
            else Error(key, $"'{s}' is not an address or CIDR network (e.g. \"10.0.0.0/8\", \"::1/128\")");
        }
        return result;
    }

    /// <summary>An "ip:port" endpoint; <paramref name="defaultPort"/> applies when the port is left out.</summary>
    public IPEndPoint? ParseEndpoint(string key, string text, int? defaultPort)
    {
        // IPEndPoint.TryParse accepts a bare address as port 0; only an explicit ":0" means port 0.
        if (IPEndPoint.TryParse(text, out var ep) && (ep.Port != 0 || text.EndsWith(":0", StringComparison.Ordinal)))
            return ep;
        if (defaultPort is { } port && IPAddress.TryParse(text.Trim('[', ']'), out var ip))
            return new IPEndPoint(ip, port);
        Error(key, $"'{text}' is not an ip:port address (e.g. \"127.0.0.1:2525\", \"[::1]:2525\")");
        return null;
    }

    private TimeSpan? ParseDurationNode(TomlNode raw, string keyPath)
    {
        if (raw is TomlScalar { Value: string s } && TryParseDuration(s, out var d)) return d;
        errors.Add(raw.Line, keyPath, $"'{Describe(raw)}' is not a duration (e.g. \"500ms\", \"30s\", \"2m\", \"1h\", \"4d\")");
        return null;
    }

    private static string Describe(TomlNode node) => node switch
    {
        TomlScalar s => Convert.ToString(s.Value, CultureInfo.InvariantCulture) ?? "",
        TomlList => "[...]",
        _ => "{...}",
    };

    [GeneratedRegex(@"^\s*(?:(\d+)\s*(ms|s|m|h|d|w))+\s*$", RegexOptions.CultureInvariant)]
    private static partial Regex DurationRegex();

    /// <summary>"500ms", "30s", "2m", "1h", "4d", "1w", or combinations like "1h30m".</summary>
    public static bool TryParseDuration(string text, out TimeSpan value)
    {
        value = TimeSpan.Zero;
        var m = DurationRegex().Match(text);
        if (!m.Success) return false;
        try
        {
            for (var i = 0; i < m.Groups[1].Captures.Count; i++)
            {
                var n = long.Parse(m.Groups[1].Captures[i].Value, CultureInfo.InvariantCulture);
                value += m.Groups[2].Captures[i].Value switch
                {
                    "ms" => TimeSpan.FromMilliseconds(n),
                    "s" => TimeSpan.FromSeconds(n),
                    "m" => TimeSpan.FromMinutes(n),
                    "h" => TimeSpan.FromHours(n),
                    "d" => TimeSpan.FromDays(n),
                    _ => TimeSpan.FromDays(7 * n),
                };
            }
            return true;
        }
        catch (Exception e) when (e is OverflowException or FormatException or ArgumentOutOfRangeException)
        {
            return false;
        }
    }

    [GeneratedRegex(@"^\s*(\d+)\s*(B|KB|K|MB|M|GB|G)?\s*$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex SizeRegex();

    /// <summary>"25MB", "512KB", "1GB", "100B" or a plain byte count; KB/MB/GB are powers of 1024.</summary>
    public static bool TryParseSize(string text, out long value)
    {
        value = 0;
        var m = SizeRegex().Match(text);
        if (!m.Success || !long.TryParse(m.Groups[1].Value, CultureInfo.InvariantCulture, out var n)) return false;
        var unit = m.Groups[2].Value.ToUpperInvariant();
        long factor = unit switch { "K" or "KB" => 1L << 10, "M" or "MB" => 1L << 20, "G" or "GB" => 1L << 30, _ => 1 };
        if (n > long.MaxValue / factor) return false;
        value = n * factor;
        return true;
    }

    /// <summary>A CIDR network, or a single address (as a /32 or /128).</summary>
    public static bool TryParseNetwork(string text, out IPNetwork network)
    {
        if (IPNetwork.TryParse(text, out network)) return true;
        if (IPAddress.TryParse(text, out var ip))
        {
            network = new IPNetwork(ip, ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
            return true;
        }
        return false;
    }
}
