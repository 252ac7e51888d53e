// TemplateStore: file-backed Liquid templates ([templates] path): <name>.subject, <name>.txt and/or <name>.html,
// rendered with Fluid. Files are re-read when they change (by modification time), so editing a template needs
// no restart. An unknown template or a variable the template uses but the request lacks is a 400 naming it.
using System.Collections.Concurrent;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using Fluid;
using Fluid.Values;
using Relay.Api.Submission;

namespace Relay.Api.Templates;

internal sealed record RenderedTemplate(string? Subject, string? Text, string? Html);

internal sealed partial class TemplateStore(string? path)
{
    private static readonly FluidParser Parser = new();
    private static readonly TemplateOptions Options = CreateOptions();
    // Escapes what HTML needs (<, >, &, quotes) but leaves letters like ë alone: the part is UTF-8 anyway.
    private static readonly HtmlEncoder Html = HtmlEncoder.Create(System.Text.Unicode.UnicodeRanges.All);
    private readonly ConcurrentDictionary<string, (DateTime Modified, IFluidTemplate Template)> _cache = new(StringComparer.Ordinal);

    public const string SubjectExtension = ".subject";
    public const string TextExtension = ".txt";
    public const string HtmlExtension = ".html";

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    private static partial Regex NameRegex();

    private static TemplateOptions CreateOptions()
    {
        var options = new TemplateOptions { MemberAccessStrategy = new UnsafeMemberAccessStrategy() };
        return options;
    }

    /// <summary>Every template in the folder (a name with at least one of the three files), sorted.</summary>
    public IReadOnlyList<TemplateView> List()
    {
        if (path is null || !Directory.Exists(path)) return [];
        return Directory.EnumerateFiles(path)
            .Select(f => Path.GetFileName(f))
            .Where(f => f.EndsWith(SubjectExtension, StringComparison.Ordinal) || f.EndsWith(TextExtension, StringComparison.Ordinal)
                        || f.EndsWith(HtmlExtension, StringComparison.Ordinal))
            .Select(Path.GetFileNameWithoutExtension)
            .Where(n => n is not null && NameRegex().IsMatch(n))
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)
            .Select(n => new TemplateView(n!, File.Exists(FileOf(n!, SubjectExtension)), File.Exists(FileOf(n!, TextExtension)),
                                          File.Exists(FileOf(n!, HtmlExtension))))
            .Where(v => v.Text || v.Html)
            .ToList();
    }

    private string FileOf(string name, string extension) => Path.Combine(path!, name + extension);

    /// <summary>Renders template <paramref name="name"/>; null (with problems added) when unknown, broken or missing variables.</summary>
    public async ValueTask<RenderedTemplate?> RenderAsync(string name, Dictionary<string, JsonElement>? vars, ProblemList problems,
                                                          CancellationToken cancellationToken)
    {
        if (path is null) { problems.Add("template", "no templates are configured ([templates] path)"); return null; }
        if (!NameRegex().IsMatch(name)) { problems.Add("template", $"'{name}' is not a template name"); return null; }
        var subject = Load(name, SubjectExtension, problems);
        var text = Load(name, TextExtension, problems);
        var html = Load(name, HtmlExtension, problems);
        if (problems.Any) return null;
        if (text is null && html is null) { problems.Add("template", $"unknown template '{name}'"); return null; }

        var missing = new SortedSet<string>(StringComparer.Ordinal);
        var context = new TemplateContext(Options);
        foreach (var (key, value) in vars ?? []) context.SetValue(key, ToObject(value));
        context.Undefined = variable =>
        {
            missing.Add(variable);
            return ValueTask.FromResult<FluidValue>(NilValue.Instance);
        };
        string? renderedSubject, renderedText, renderedHtml;
        try
        {
            renderedSubject = subject is null ? null : (await subject.RenderAsync(context, NullEncoder.Default)).Trim();
            renderedText = text is null ? null : await text.RenderAsync(context, NullEncoder.Default);
            renderedHtml = html is null ? null : await html.RenderAsync(context, Html);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A template that fails while rendering (a missing include, a filter error) is the request's problem
            // to report, not a 500: name the template and what went wrong.
            problems.Add("template", $"template '{name}' failed to render: {e.Message}");
            return null;
        }
        cancellationToken.ThrowIfCancellationRequested();
        foreach (var variable in missing) problems.Add($"vars.{variable}", $"template '{name}' uses it, the request does not set it");
        return missing.Count > 0 ? null : new RenderedTemplate(renderedSubject, renderedText, renderedHtml);
    }

    private IFluidTemplate? Load(string name, string extension, ProblemList problems)
    {
        var file = FileOf(name, extension);
        DateTime modified;
        try
        {
            if (!File.Exists(file)) return null;
            modified = File.GetLastWriteTimeUtc(file);
            if (_cache.TryGetValue(file, out var cached) && cached.Modified == modified) return cached.Template;
            var source = File.ReadAllText(file);
            if (!Parser.TryParse(source, out var template, out var error))
            {
                problems.Add("template", $"template file {name}{extension} does not parse: {error}");
                return null;
            }
            _cache[file] = (modified, template);
            return template;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            problems.Add("template", $"template file {name}{extension} cannot be read: {e.Message}");
            return null;
        }
    }

    /// <summary>JSON → plain objects Fluid understands (dictionaries, lists, strings, numbers, booleans).</summary>
    private static object? ToObject(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().ToDictionary(p => p.Name, p => ToObject(p.Value), StringComparer.Ordinal),
        JsonValueKind.Array => e.EnumerateArray().Select(ToObject).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out var l) ? l : e.GetDecimal(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };
}
