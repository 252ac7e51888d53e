// ApiOutcome: the answer to one submission (status + body), shared by the single and batch routes and
// handed to requests waiting on the same Idempotency-Key.
using Relay.Api.Submission;

namespace Relay.Api;

internal sealed record ApiOutcome(int Status, object Body)
{
    public TimeSpan? RetryAfter { get; init; }

    public const string ProblemTypePrefix = "urn:relay:problem:";

    public static ApiOutcome Accepted(string id, int recipients, DateTimeOffset? notBefore) =>
        new(202, new AcceptedResponse(id, recipients) { NotBefore = notBefore });

    public static ApiOutcome Problem(int status, string type, string title, string? detail, IReadOnlyDictionary<string, string[]>? errors = null) =>
        new(status, new ProblemResponse(ProblemTypePrefix + type, title, status, detail, errors));

    public static ApiOutcome Invalid(ProblemList problems) =>
        Problem(400, "invalid-request", "Invalid request", "the request has invalid fields; nothing was queued", problems.ToDictionary());
}
