// PrometheusText: writes the text exposition format 0.0.4 (HELP, TYPE, samples; histograms as cumulative
// _bucket{le} series plus _sum and _count). Written by hand: the format is small and needs no package.
using System.Globalization;
using System.Text;

namespace Relay.Admin.Metrics;

public sealed class PrometheusText
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private readonly StringBuilder _out = new();

    public override string ToString() => _out.ToString();

    public PrometheusText Header(string name, string type, string help)
    {
        _out.Append("# HELP ").Append(name).Append(' ').Append(EscapeHelp(help)).Append('\n');
        _out.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
        return this;
    }

    public PrometheusText Sample(string name, double value, params (string Name, string Value)[] labels)
    {
        _out.Append(name);
        if (labels.Length > 0)
        {
            _out.Append('{');
            for (var i = 0; i < labels.Length; i++)
            {
                if (i > 0) _out.Append(',');
                _out.Append(labels[i].Name).Append("=\"").Append(EscapeLabel(labels[i].Value)).Append('"');
            }
            _out.Append('}');
        }
        _out.Append(' ').Append(Format(value)).Append('\n');
        return this;
    }

    public PrometheusText Family(Family<Counter> family, string type = "counter")
    {
        Header(family.Name, type, family.Help);
        foreach (var (labels, c) in family.Children) Sample(family.Name, c.Value, Zip(family.LabelNames, labels));
        return this;
    }

    public PrometheusText Histograms(Family<Histogram> family)
    {
        Header(family.Name, "histogram", family.Help);
        foreach (var (labels, h) in family.Children)
        {
            var pairs = Zip(family.LabelNames, labels);
            var cumulative = h.CumulativeBuckets();
            for (var i = 0; i < cumulative.Length; i++)
            {
                var le = i < h.Bounds.Count ? Format(h.Bounds[i]) : "+Inf";
                Sample(family.Name + "_bucket", cumulative[i], [.. pairs, ("le", le)]);
            }
            Sample(family.Name + "_sum", h.Sum, pairs);
            Sample(family.Name + "_count", cumulative[^1], pairs);   // = the +Inf bucket, even mid-update
        }
        return this;
    }

    public static string Format(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf"
        : double.IsNegativeInfinity(value) ? "-Inf"
        : double.IsNaN(value) ? "NaN"
        : value.ToString("R", CultureInfo.InvariantCulture);

    private static (string, string)[] Zip(IReadOnlyList<string> names, IReadOnlyList<string> values) =>
        names.Select((n, i) => (n, values[i])).ToArray();

    private static string EscapeLabel(string v) => v.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    private static string EscapeHelp(string v) => v.Replace("\\", "\\\\").Replace("\n", "\\n");
}
