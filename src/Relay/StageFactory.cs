// StageFactory: builds the delivery and DSN stages from the settings, for RelayHost.
using Microsoft.Extensions.Logging;
using Relay.Config.Settings;
using Relay.Dsn;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay;

public static class StageFactory
{
    /// <summary>The DSN stage: delay/failure/success notices written back into the spool.</summary>
    public static Func<ISpoolStore, IDeliveryReports> CreateReports(RelaySettings settings, ILoggerFactory loggerFactory, TimeProvider? clock = null) =>
        spool => new DsnSender(spool, settings, clock ?? TimeProvider.System, loggerFactory.CreateLogger("Relay.Dsn"),
            new DsnOptions { FullReturnLimit = settings.Dsn.FullReturnLimit });

    /// <summary>The delivery stage.</summary>
    public static Func<ISpoolStore, IDeliveryAgent> CreateDeliveryAgent(RelaySettings settings, ILoggerFactory loggerFactory, TimeProvider? clock = null) =>
        settings.Delivery.Hold
            ? _ => new HoldingAgent()
            : _ => throw new InvalidOperationException("the outbound delivery stage is not built yet");
}
