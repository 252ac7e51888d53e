using System.Collections.Frozen;

namespace Relay.Config.Settings;

/// <summary>The <c>[lists]</c> table: named, case-insensitive sets for <c>in_list('name', value)</c>.</summary>
public sealed class NamedLists
{
    public static readonly NamedLists Empty = new(new Dictionary<string, IEnumerable<string>>());

    private readonly FrozenDictionary<string, FrozenSet<string>> _lists;

    public NamedLists(IReadOnlyDictionary<string, IEnumerable<string>> lists) =>
        _lists = lists.ToFrozenDictionary(
            kv => kv.Key,
            kv => kv.Value.Select(v => v.Trim()).Where(v => v.Length > 0).ToFrozenSet(StringComparer.OrdinalIgnoreCase),
            StringComparer.OrdinalIgnoreCase);

    public IEnumerable<string> Names => _lists.Keys;

    public bool Exists(string name) => _lists.ContainsKey(name);

    /// <summary>True when <paramref name="value"/> is in list <paramref name="name"/>; an unknown list holds nothing.</summary>
    public bool Contains(string name, string? value) =>
        value is not null && _lists.TryGetValue(name, out var set) && set.Contains(value);
}
