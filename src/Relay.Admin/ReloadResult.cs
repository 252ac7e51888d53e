// ReloadResult: what the host's reload callback answers. The admin API turns it into 200 or 422 with the errors.
using Relay.Config;

namespace Relay.Admin;

public sealed record ReloadResult(IReadOnlyList<ConfigError> Errors, string? Summary = null)
{
    public bool Ok => Errors.Count == 0;

    public static ReloadResult Success(string? summary = null) => new([], summary);

    public static ReloadResult Refused(IEnumerable<ConfigError> errors) => new(errors.ToList());
}
