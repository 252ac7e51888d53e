namespace Relay.Config.Strategy;

/// <summary>
/// What the strategy expressions may look at for one recipient (DESIGN.md "Strategy expressions").
/// Filled by whoever accepts mail (SMTP session, DSN builder, HTTP API) and handed to
/// <see cref="QueueStrategy.Classify"/>.
/// </summary>
public sealed class RecipientContext
{
    public string Recipient { get; init; } = "";
    public string Sender { get; init; } = "";
    /// <summary>RFC 6710 scale, −9..9.</summary>
    public int Priority { get; init; }
    /// <summary><c>smtp</c>, <c>dsn</c> or <c>api</c>.</summary>
    public string Source { get; init; } = "smtp";
    public long Size { get; init; }
    public string RemoteIp { get; init; } = "";
    public string Listener { get; init; } = "";
    public string AuthenticatedAs { get; init; } = "";
    public string Subject { get; init; } = "";
    /// <summary>Header lookup for <c>header('Name')</c>: first value of that header, or null. Null before DATA.</summary>
    public Func<string, string?>? Headers { get; init; }

    private string? _recipientDomain, _senderDomain;

    /// <summary>Lower-cased domain of <see cref="Recipient"/>, computed once.</summary>
    public string RecipientDomain => _recipientDomain ??= DomainOf(Recipient);
    /// <summary>Lower-cased domain of <see cref="Sender"/>; empty for the null sender.</summary>
    public string SenderDomain => _senderDomain ??= DomainOf(Sender);

    /// <summary>The part after the last '@', lower-cased; empty for the null sender or a bare name.</summary>
    public static string DomainOf(string address)
    {
        var at = address.LastIndexOf('@');
        return at < 0 ? "" : address[(at + 1)..].ToLowerInvariant();
    }
}
