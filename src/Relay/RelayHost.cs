// RelayHost: wires the stages in their one-way order — spool, scheduler (with delivery and DSN
// behind it), then the SMTP listeners in front — and stops them in reverse.
using Microsoft.Extensions.Logging;
using Relay.Admin;
using Relay.Admin.Metrics;
using Relay.Admin.Observation;
using Relay.Api;
using Relay.Config;
using Relay.Config.Settings;
using Relay.Inbound;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay;

/// <summary>A running relay: every stage of one process, started and stopped together.</summary>
public sealed class RelayHost : IAsyncDisposable
{
    private readonly ILogger _log;
    private bool _stopped;
    private IDeliveryAgent? _deliveryAgent;

    private RelayHost(RelaySettings settings, FileSpool spool, QueueScheduler scheduler, InboundServer inbound,
        RelayMetrics metrics, SlaTracker sla, ILogger log)
    {
        Settings = settings;
        Spool = spool;
        Scheduler = scheduler;
        Inbound = inbound;
        Metrics = metrics;
        Sla = sla;
        _log = log;
    }

    public RelaySettings Settings { get; }
    public FileSpool Spool { get; }
    public QueueScheduler Scheduler { get; }
    public InboundServer Inbound { get; }
    public RelayMetrics Metrics { get; }
    public SlaTracker Sla { get; }
    /// <summary>The admin API, or null when no <c>[admin] token</c> is configured.</summary>
    public AdminServer? Admin { get; private set; }
    /// <summary>The HTTP submission API, or null when <c>[api] bind</c> is not set.</summary>
    public ApiServer? Api { get; private set; }

    /// <summary>Opens the spool (recovering what a previous run left), starts the scheduler and the listeners.</summary>
    /// <param name="createAgent">Builds the delivery stage from the spool (e.g. the SMTP delivery agent).</param>
    /// <param name="createReports">Builds the DSN stage from the spool.</param>
    public static async Task<RelayHost> StartAsync(
        RelaySettings settings,
        Func<ISpoolStore, IDeliveryAgent> createAgent,
        Func<ISpoolStore, IDeliveryReports> createReports,
        ILoggerFactory loggerFactory,
        TimeProvider? clock = null,
        CancellationToken cancellationToken = default)
    {
        clock ??= TimeProvider.System;
        var log = loggerFactory.CreateLogger("Relay");
        Directory.CreateDirectory(settings.Spool.Path);
        var spool = FileSpool.Open(settings.Spool, clock, loggerFactory.CreateLogger("Relay.Spool"));
        QueueScheduler? scheduler = null;
        InboundServer? inbound = null;
        try
        {
            // Delivery and DSN outcomes pass through observers that feed metrics, SLA and history.
            var adminOptions = new AdminOptions { Retention = settings.Spool.Retention };
            var metrics = new RelayMetrics();
            var history = new DeliveryHistory(adminOptions);
            var sla = new SlaTracker(clock, adminOptions, loggerFactory.CreateLogger("Relay.Sla"));
            sla.SetTargets(SlaTracker.TargetsFrom(settings.Queue));
            var deliveryAgent = createAgent(spool);
            var agent = new ObservedDeliveryAgent(deliveryAgent, metrics, history, clock);
            var reports = new ObservedDeliveryReports(createReports(spool), metrics, sla, history, clock);
            scheduler = new QueueScheduler(spool, settings.Queue, agent, reports, clock,
                loggerFactory.CreateLogger("Relay.Scheduler"));
            scheduler.Start();
            inbound = new InboundServer(settings, spool, loggerFactory, new SchedulerAdmission(scheduler), clock)
            {
                Events = new MetricsInboundEvents(metrics),
            };
            await inbound.StartAsync(cancellationToken);
            foreach (var endpoint in inbound.EndPoints)
                log.LogInformation("listening: {Listener} on {EndPoint}", endpoint.Listener, endpoint.EndPoint);
            var host = new RelayHost(settings, spool, scheduler, inbound, metrics, sla, log) { _deliveryAgent = deliveryAgent };
            if (settings.Api.Enabled)
            {
                // NoDeliveryEvents until the delivery-event stage is wired in (issue #10).
                host.Api = new ApiServer(settings.Api, settings.Server.Hostname, spool, context => host.Settings.Queue.Strategy.Classify(context),
                    NoDeliveryEvents.Instance, NoDeliveryEvents.Instance, clock, loggerFactory) { QueueHasRoom = scheduler.HasRoom };
                await host.Api.StartAsync(cancellationToken);
            }
            if (settings.Admin.Enabled)
            {
                host.Admin = new AdminServer(settings.Admin, new AdminServices
                {
                    Spool = spool, Scheduler = scheduler, Metrics = metrics, Sla = sla, History = history, Clock = clock,
                    Control = new SpoolQueueControl(spool, scheduler, reports, clock, loggerFactory.CreateLogger("Relay.Admin")),
                    Reload = host.ReloadAsync,
                    SpoolRoot = settings.Spool.Path,
                }, adminOptions, loggerFactory);
                await host.Admin.StartAsync(cancellationToken);
                log.LogInformation("admin API on {EndPoint}", host.Admin.EndPoint);
            }
            else
            {
                log.LogWarning("admin API off: no [admin] token and no RELAY_ADMIN_TOKEN");
            }
            return host;
        }
        catch
        {
            if (inbound is not null) await inbound.DisposeAsync();
            if (scheduler is not null) await scheduler.DisposeAsync();
            await spool.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Re-reads the config file and validates it; an invalid one is refused with its errors. Today only the
    /// SLA targets are applied live; strategy, schedules and listeners change at the next restart.
    /// </summary>
    public Task<ReloadResult> ReloadAsync(CancellationToken cancellationToken)
    {
        var loaded = ConfigLoader.LoadFile(Settings.SourcePath);
        if (!loaded.Ok)
        {
            foreach (var error in loaded.Errors) _log.LogError("reload refused: {Error}", error.ToString());
            return Task.FromResult(ReloadResult.Refused(loaded.Errors));
        }
        Sla.SetTargets(SlaTracker.TargetsFrom(loaded.Settings!.Queue));
        _log.LogInformation("reload: {Path} is valid; SLA targets applied, other changes take effect at restart", Settings.SourcePath);
        return Task.FromResult(ReloadResult.Success("valid; SLA targets applied; strategy, schedules and listeners change at restart"));
    }

    /// <summary>Stops accepting, lets in-flight work finish, leaves everything else in the spool.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_stopped) return;
        _stopped = true;
        if (Admin is not null) await Admin.StopAsync(cancellationToken);
        if (Api is not null) await Api.StopAsync(cancellationToken);
        await Inbound.StopAsync(cancellationToken);
        await Scheduler.StopAsync();
        if (_deliveryAgent is IAsyncDisposable disposable) await disposable.DisposeAsync();   // QUIT pooled connections
        await Spool.DisposeAsync();
        _log.LogInformation("stopped");
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await Inbound.DisposeAsync();
        if (Api is not null) await Api.DisposeAsync();
        if (Admin is not null) await Admin.DisposeAsync();
    }

    /// <summary>SMTP listener traffic into the Prometheus counters.</summary>
    private sealed class MetricsInboundEvents(RelayMetrics metrics) : IInboundEvents
    {
        public void SessionOpened() => metrics.SessionOpened();
        public void SessionClosed() => metrics.SessionClosed();
        public void RecipientAnswered(int replyCode) => metrics.RecipientAnswered(replyCode);
        public void MessageAnswered(int replyCode) => metrics.MessageAnswered(replyCode);
    }

    /// <summary>Back-pressure at RCPT comes from the scheduler's view of each virtual queue.</summary>
    private sealed class SchedulerAdmission(QueueScheduler scheduler) : IQueueAdmission
    {
        public bool HasRoom(string queueName) => scheduler.HasRoom(queueName);
    }
}
