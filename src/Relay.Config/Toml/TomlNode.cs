// TomlNode: a tiny TOML value tree that remembers the line of every key, which Tomlyn's
// object model does not; config errors must name file, line and key.
using Tomlyn.Syntax;

namespace Relay.Config.Toml;

/// <summary>A TOML value with the 1-based line it was written on.</summary>
internal abstract record TomlNode(int Line);

internal sealed record TomlScalar(int Line, object Value) : TomlNode(Line);

internal sealed record TomlList(int Line, IReadOnlyList<TomlNode> Items) : TomlNode(Line);

/// <summary>A table; keys keep the order they were written in.</summary>
internal sealed record TomlTableNode(int Line) : TomlNode(Line)
{
    public List<KeyValuePair<string, TomlNode>> Entries { get; } = [];

    public TomlNode? Get(string key) => Entries.FirstOrDefault(e => e.Key == key).Value;
}

/// <summary>Builds a <see cref="TomlTableNode"/> tree from Tomlyn's syntax tree.</summary>
internal static class TomlReader
{
    /// <summary>Parses <paramref name="text"/>; syntax errors come back as (line, message).</summary>
    public static (TomlTableNode Root, List<(int Line, string Message)> Errors) Read(string text, string path)
    {
        var errors = new List<(int, string)>();
        var root = new TomlTableNode(1);
        var doc = Tomlyn.Parsing.SyntaxParser.Parse(text, path, true);
        if (doc.HasErrors)
        {
            foreach (var d in doc.Diagnostics)
                errors.Add((d.Span.Start.Line + 1, d.Message));
            return (root, errors);
        }

        foreach (var kv in doc.KeyValues)
            AddKeyValue(root, kv, errors);
        foreach (var table in doc.Tables)
        {
            var path2 = KeyParts(table.Name!);
            var line = table.Span.Start.Line + 1;
            TomlTableNode target;
            if (table is TableArraySyntax)
            {
                // [[a.b]]: append a new table to the list at a.b.
                var parent = Descend(root, path2[..^1], line, errors);
                var existing = parent.Get(path2[^1]);
                var fresh = new TomlTableNode(line);
                if (existing is TomlList list && list.Items is List<TomlNode> items) items.Add(fresh);
                else parent.Entries.Add(new(path2[^1], new TomlList(line, new List<TomlNode> { fresh })));
                target = fresh;
            }
            else
            {
                target = Descend(root, path2, line, errors);
            }
            foreach (var kv in table.Items)
                AddKeyValue(target, kv, errors);
        }
        return (root, errors);
    }

    private static void AddKeyValue(TomlTableNode table, KeyValueSyntax kv, List<(int, string)> errors)
    {
        var parts = KeyParts(kv.Key!);
        var line = kv.Span.Start.Line + 1;
        var target = Descend(table, parts[..^1], line, errors);
        target.Entries.Add(new(parts[^1], Convert(kv.Value!)));
    }

    private static TomlTableNode Descend(TomlTableNode from, string[] parts, int line, List<(int, string)> errors)
    {
        var current = from;
        foreach (var part in parts)
        {
            var next = current.Get(part);
            if (next is TomlTableNode t) { current = t; continue; }
            if (next is TomlList { Items.Count: > 0 } l && l.Items[^1] is TomlTableNode lt) { current = lt; continue; }
            var created = new TomlTableNode(line);
            current.Entries.Add(new(part, created));
            current = created;
        }
        return current;
    }

    private static string[] KeyParts(KeySyntax key)
    {
        var parts = new List<string> { KeyText(key.Key!) };
        foreach (var dot in key.DotKeys)
            parts.Add(KeyText(dot.Key!));
        return [.. parts];
    }

    private static string KeyText(BareKeyOrStringValueSyntax key) => key switch
    {
        BareKeySyntax bare => bare.Key!.Text!,
        StringValueSyntax s => s.Value!,
        _ => key.ToString()!.Trim(),
    };

    private static TomlNode Convert(ValueSyntax value)
    {
        var line = value.Span.Start.Line + 1;
        switch (value)
        {
            case StringValueSyntax s: return new TomlScalar(line, s.Value!);
            case IntegerValueSyntax i: return new TomlScalar(line, i.Value);
            case BooleanValueSyntax b: return new TomlScalar(line, b.Value);
            case FloatValueSyntax f: return new TomlScalar(line, f.Value);
            case DateTimeValueSyntax d: return new TomlScalar(line, d.Value.ToString()!);
            case ArraySyntax a:
                return new TomlList(line, a.Items.Select(item => Convert(item.Value!)).ToList());
            case InlineTableSyntax t:
                var table = new TomlTableNode(line);
                foreach (var item in t.Items)
                    AddKeyValue(table, item.KeyValue!, []);
                return table;
            default:
                return new TomlScalar(line, value.ToString()!.Trim());
        }
    }
}
