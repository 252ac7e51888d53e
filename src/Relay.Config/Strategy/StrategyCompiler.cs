// StrategyCompiler: parses each rule's NCalc text once, checks names against DESIGN.md's
// variables and functions (so a typo is a load error with a line, not a silent false), and
// compiles it to a delegate with NCalc's lambda compiler (no tree re-interpretation per mail).
using NCalc;
using NCalc.Domain;
using Relay.Config.Settings;

namespace Relay.Config.Strategy;

internal static class StrategyCompiler
{
    /// <summary>Compiles an <c>if</c> condition. Returns null and sets <paramref name="error"/> when invalid.</summary>
    /// <param name="unavailable">Variables and functions the caller cannot supply (e.g. headers at delivery time).</param>
    public static Func<ExpressionScope, bool>? CompileCondition(string text, NamedLists lists, out string? error,
        IReadOnlySet<string>? unavailable = null)
    {
        var parsed = Parse(text, lists, unavailable, out error);
        if (parsed is null) return null;
        try
        {
            return parsed.ToLambda<ExpressionScope, bool>();
        }
        catch (Exception e)
        {
            error = $"expression '{text}' cannot be evaluated as true/false: {e.Message}";
            return null;
        }
    }

    /// <summary>Compiles a <c>then</c> value. A string literal comes back as <paramref name="literal"/> and no delegate.</summary>
    public static Func<ExpressionScope, string>? CompileResult(string text, NamedLists lists, out string? literal, out string? error,
        IReadOnlySet<string>? unavailable = null)
    {
        literal = null;
        var parsed = Parse(text, lists, unavailable, out error);
        if (parsed is null) return null;
        if (parsed.ParsedExpression is ValueExpression { Type: NCalc.Domain.ValueType.String } value)
        {
            literal = (string)value.Value;
            return null;
        }
        try
        {
            return parsed.ToLambda<ExpressionScope, string>();
        }
        catch (Exception e)
        {
            error = $"expression '{text}' does not give a name: {e.Message}";
            return null;
        }
    }

    private static Expression? Parse(string text, NamedLists lists, IReadOnlySet<string>? unavailable, out string? error)
    {
        error = null;
        var expression = new Expression(text, EvaluateOptions.NoCache);
        if (expression.HasErrors())
        {
            error = $"expression '{text}' does not parse: {expression.Error}";
            return null;
        }
        var checker = new NameChecker(lists, unavailable);
        try
        {
            expression.ParsedExpression.Accept(checker);
        }
        catch (Exception e)
        {
            error = $"expression '{text}': {e.Message}";
            return null;
        }
        if (checker.Problem is not null)
        {
            error = $"expression '{text}': {checker.Problem}";
            return null;
        }
        return expression;
    }

    /// <summary>Walks the parsed tree and reports the first unknown variable, function, list or bad regex.</summary>
    private sealed class NameChecker(NamedLists lists, IReadOnlySet<string>? unavailable) : LogicalExpressionVisitor
    {
        public string? Problem { get; private set; }

        private void Report(string problem) => Problem ??= problem;

        public override void Visit(LogicalExpression expression) { }

        public override void Visit(TernaryExpression expression)
        {
            expression.LeftExpression.Accept(this);
            expression.MiddleExpression.Accept(this);
            expression.RightExpression.Accept(this);
        }

        public override void Visit(BinaryExpression expression)
        {
            expression.LeftExpression.Accept(this);
            expression.RightExpression.Accept(this);
        }

        public override void Visit(UnaryExpression expression) => expression.Expression.Accept(this);

        public override void Visit(ValueExpression expression) { }

        public override void Visit(Identifier identifier)
        {
            if (!ExpressionScope.Variables.Contains(identifier.Name))
                Report($"unknown variable '{identifier.Name}' (known: {string.Join(", ", ExpressionScope.Variables)})");
            else if (unavailable?.Contains(identifier.Name) == true)
                Report($"'{identifier.Name}' is not available here (only while a message is being accepted)");
        }

        public override void Visit(Function function)
        {
            var name = function.Identifier.Name;
            if (!ExpressionScope.Functions.TryGetValue(name, out var arity))
            {
                Report($"unknown function '{name}' (known: {string.Join(", ", ExpressionScope.Functions.Keys)})");
                return;
            }
            if (function.Expressions.Length != arity)
            {
                Report($"function '{name}' takes {arity} argument(s), not {function.Expressions.Length}");
                return;
            }
            if (unavailable?.Contains(name) == true)
            {
                Report($"'{name}()' is not available here (only while a message is being accepted)");
                return;
            }
            var first = function.Expressions[0] as ValueExpression;
            if (name == "in_list" && first is { Type: NCalc.Domain.ValueType.String } && !lists.Exists((string)first.Value))
                Report($"in_list: no list named '{first.Value}' in [lists]");
            if (name == "matches" && first is { Type: NCalc.Domain.ValueType.String })
            {
                try { ExpressionScope.GetRegex((string)first.Value); }
                catch (ArgumentException e) { Report($"matches: bad regular expression '{first.Value}': {e.Message}"); }
            }
            foreach (var argument in function.Expressions)
                argument.Accept(this);
        }
    }
}
