// RelaySettings: the whole parsed, validated configuration. Immutable; a reload builds a new one.
using System.Collections.Frozen;
using System.Net;
using Relay.Config.Strategy;

namespace Relay.Config.Settings;

/// <summary>The validated configuration of one relay process (DESIGN.md "Config file").</summary>
public sealed record RelaySettings
{
    /// <summary>Path of the file this was loaded from (used to resolve relative paths).</summary>
    public required string SourcePath { get; init; }
    public required ServerSettings Server { get; init; }
    public required SessionSettings Session { get; init; }
    public required LocalSettings Local { get; init; }
    public required SpoolSettings Spool { get; init; }
    public required ResolverSettings Resolver { get; init; }
    public required DeliverySettings Delivery { get; init; }
    public required QueueSettings Queue { get; init; }
    public required NamedLists Lists { get; init; }
    public required AdminSettings Admin { get; init; }
    public required DsnSettings Dsn { get; init; }
    /// <summary><c>[api]</c>, <c>[api.client.*]</c>, <c>[templates]</c>: the HTTP submission API (off unless <c>[api] bind</c>).</summary>
    public ApiSettings Api { get; init; } = ApiSettings.Off;
}

public sealed record ServerSettings(string Hostname, IReadOnlyList<ListenerSettings> Listeners)
{
    public static readonly TimeSpan DefaultShutdownTimeout = TimeSpan.FromSeconds(30);

    /// <summary><c>shutdown-timeout</c>: on SIGTERM, how long sessions and deliveries in flight may take to finish.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = DefaultShutdownTimeout;
}

/// <summary>One <c>[server.listener.NAME]</c> table.</summary>
public sealed record ListenerSettings(
    string Name,
    IReadOnlyList<IPEndPoint> Bind,
    TlsSettings? Tls,
    bool ImplicitTls,
    bool RequireAuth);

/// <summary>PEM certificate and key paths (already resolved against the config file's folder).</summary>
public sealed record TlsSettings(string Certificate, string Key);

public sealed record SessionSettings
{
    public long MaxMessageSize { get; init; } = 25L * 1024 * 1024;
    public int MaxRecipients { get; init; } = 100;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);
    public int MaxConnections { get; init; } = 1000;
    public bool ReverseDns { get; init; }
    /// <summary>More <c>Received:</c> headers than this is a mail loop (554 5.4.6).</summary>
    public int MaxReceivedHeaders { get; init; } = 50;
    /// <summary>Bad commands tolerated in one session before 421 and close.</summary>
    public int MaxErrors { get; init; } = 10;
    public RelayControlSettings Relay { get; init; } = new();
    public PrioritySettings Priority { get; init; } = new();
}

/// <summary><c>[session.relay]</c>: who may send to non-local domains.</summary>
public sealed record RelayControlSettings
{
    public IReadOnlyList<IPNetwork> Networks { get; init; } =
        [IPNetwork.Parse("127.0.0.0/8"), IPNetwork.Parse("::1/128")];
    /// <summary>user name → secret; a secret is plain text or a hash (see README, "AUTH secrets").</summary>
    public IReadOnlyDictionary<string, string> Users { get; init; } = FrozenDictionary<string, string>.Empty;
}

/// <summary><c>[session.priority]</c>: the RFC 6710 priority model of DESIGN.md.</summary>
public sealed record PrioritySettings
{
    public IReadOnlyList<IPNetwork> MtPriorityFrom { get; init; } = [IPNetwork.Parse("127.0.0.0/8")];
    public int Default { get; init; }
    /// <summary>Clients whose <c>X-Message-Priority:</c> header counts; null = relay networks and authenticated clients.</summary>
    public IReadOnlyList<IPNetwork>? HeaderFrom { get; init; }
}

public sealed record LocalSettings(IReadOnlyList<string> Domains)
{
    private readonly FrozenSet<string> _set = Domains.ToFrozenSet(StringComparer.OrdinalIgnoreCase);
    public bool IsLocal(string domain) => _set.Contains(domain);
}

public sealed record SpoolSettings(string Path, TimeSpan Retention);

public sealed record ResolverSettings(IReadOnlyList<IPEndPoint> Nameservers, TimeSpan Timeout);

public sealed record DeliverySettings(int Port, TimeSpan ConnectTimeout)
{
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(5);
    public int MaxConnectionsPerHost { get; init; } = 5;
    public TimeSpan ConnectionWait { get; init; } = TimeSpan.FromSeconds(30);
    public int MaxMessagesPerConnection { get; init; } = 100;
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Domains whose MX must offer STARTTLS with a certificate that validates.</summary>
    public IReadOnlyList<string> RequireTls { get; init; } = [];
    /// <summary>Recipient domain → (count, window), from <c>rate = { "example.com" = "100/1m" }</c>.</summary>
    public IReadOnlyDictionary<string, (int Count, TimeSpan Window)> Rates { get; init; } = new Dictionary<string, (int, TimeSpan)>();
    /// <summary><c>route</c> rules: 'mx' or a smart host name per delivery; null when not configured (all MX).</summary>
    public DeliveryRoute? Route { get; init; }
    public IReadOnlyDictionary<string, SmartHostSettings> SmartHosts { get; init; } = new Dictionary<string, SmartHostSettings>();
    public TimeSpan DnsCacheMaxTtl { get; init; } = TimeSpan.FromHours(1);
    public TimeSpan DnsNegativeTtl { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary><c>[delivery] hold</c>: accept and queue, deliver nothing (like Postfix's defer_transports); for maintenance and ingest benchmarks.</summary>
    public bool Hold { get; init; }
}

/// <summary>One <c>[delivery.smart-host.NAME]</c>; Tls is starttls, implicit, opportunistic or none.</summary>
public sealed record SmartHostSettings(string Host, int Port, string Tls, string? Username, string? Password);

/// <summary><c>[admin]</c>; a null token (none configured) leaves the admin API off.</summary>
public sealed record AdminSettings(IPEndPoint Bind, string? Token)
{
    public bool Enabled => Token is not null;
}

/// <summary><c>[dsn]</c>: how delivery status notifications look.</summary>
public sealed record DsnSettings(string FromName, string FromAddress)
{
    /// <summary>Without RET, a failure DSN returns the whole original up to this size, only its headers above it.</summary>
    public long FullReturnLimit { get; init; } = 50 * 1024;
}

/// <summary><c>[queue]</c>: the strategy, the schedules it can pick and the virtual queues they feed.</summary>
public sealed record QueueSettings(
    QueueStrategy Strategy,
    IReadOnlyDictionary<string, ScheduleSettings> Schedules,
    IReadOnlyDictionary<string, VirtualQueueSettings> VirtualQueues);

/// <summary>How a schedule gives up: after a time from arrival, or after a number of attempts. Never both.</summary>
public abstract record Expiry
{
    public sealed record Ttl(TimeSpan After) : Expiry;
    public sealed record Attempts(int Max) : Expiry;
}

/// <summary>One <c>[queue.schedule.NAME]</c>.</summary>
public sealed record ScheduleSettings(
    string Name,
    string QueueName,
    IReadOnlyList<TimeSpan> Retry,
    IReadOnlyList<TimeSpan> Notify,
    Expiry Expiry,
    TimeSpan? Sla)
{
    /// <summary>Wait after failed attempt <paramref name="attempt"/> (1-based): retry[min(n-1, len-1)].</summary>
    public TimeSpan RetryDelay(int attempt) => Retry[Math.Clamp(attempt - 1, 0, Retry.Count - 1)];
}

/// <summary>One <c>[queue.virtual.NAME]</c>.</summary>
public sealed record VirtualQueueSettings(string Name, int ThreadsPerNode, TimeSpan PriorityAging, long? MaxSize);
