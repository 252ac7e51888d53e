// StageFactory: builds the delivery and DSN stages from the settings, for RelayHost.
using Microsoft.Extensions.Logging;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Delivery;
using Relay.Dsn;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay;

public static class StageFactory
{
    /// <summary>
    /// The DSN stage: delay/failure/success notices written back into the spool, classified with the host's
    /// live strategy (so a reload reaches DSNs too).
    /// </summary>
    public static Func<ISpoolStore, LiveStrategy, IDeliveryReports> CreateReports(RelaySettings settings, ILoggerFactory loggerFactory, TimeProvider? clock = null) =>
        (spool, strategy) => new DsnSender(spool, settings, strategy, clock ?? TimeProvider.System, loggerFactory.CreateLogger("Relay.Dsn"),
            new DsnOptions { FullReturnLimit = settings.Dsn.FullReturnLimit });

    /// <summary>The delivery stage.</summary>
    public static Func<ISpoolStore, IDeliveryAgent> CreateDeliveryAgent(RelaySettings settings, ILoggerFactory loggerFactory, TimeProvider? clock = null) =>
        settings.Delivery.Hold
            ? _ => new HoldingAgent()
            : _ => new DeliveryAgent(settings.Server.Hostname, settings.Resolver, settings.Delivery,
                DeliveryOptionsFrom(settings.Delivery, loggerFactory.CreateLogger("Relay.Delivery.Route")), clock ?? TimeProvider.System, loggerFactory.CreateLogger("Relay.Delivery"));

    /// <summary>Maps the <c>[delivery]</c> settings onto the delivery stage's options.</summary>
    /// <param name="routeLog">Where a <c>route</c> rule failing at run time is logged (the <c>else</c> route is used).</param>
    public static DeliveryOptions DeliveryOptionsFrom(DeliverySettings d, ILogger? routeLog = null) => new()
    {
        CommandTimeout = d.CommandTimeout,
        MaxConnectionsPerHost = d.MaxConnectionsPerHost,
        ConnectionWait = d.ConnectionWait,
        MaxMessagesPerConnection = d.MaxMessagesPerConnection,
        IdleTimeout = d.IdleTimeout,
        RequireTls = new HashSet<string>(d.RequireTls, StringComparer.OrdinalIgnoreCase),
        Rates = d.Rates.ToDictionary(kv => kv.Key, kv => new RateLimit(kv.Value.Count, kv.Value.Window), StringComparer.OrdinalIgnoreCase),
        RouteSelector = d.Route is { } route ? DeliveryOptions.RouteSelectorFor(route, routeLog) : null,
        SmartHosts = d.SmartHosts.ToDictionary(kv => kv.Key, kv => new SmartHost(kv.Value.Host, kv.Value.Port, kv.Value.Tls switch
        {
            "implicit" => SmartHostTls.Implicit,
            "opportunistic" => SmartHostTls.Opportunistic,
            "none" => SmartHostTls.None,
            _ => SmartHostTls.StartTls,
        }, kv.Value.Username, kv.Value.Password)),
        DnsCacheMaxTtl = d.DnsCacheMaxTtl,
        DnsNegativeTtl = d.DnsNegativeTtl,
    };
}
