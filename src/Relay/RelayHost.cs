// RelayHost: wires the stages in their one-way order — spool, scheduler (with delivery and DSN
// behind it), then the SMTP listeners in front — and stops them in reverse.
using Microsoft.Extensions.Logging;
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

    private RelayHost(RelaySettings settings, FileSpool spool, QueueScheduler scheduler, InboundServer inbound, ILogger log)
    {
        Settings = settings;
        Spool = spool;
        Scheduler = scheduler;
        Inbound = inbound;
        _log = log;
    }

    public RelaySettings Settings { get; }
    public FileSpool Spool { get; }
    public QueueScheduler Scheduler { get; }
    public InboundServer Inbound { get; }

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
        try
        {
            scheduler = new QueueScheduler(spool, settings.Queue, createAgent(spool), createReports(spool), clock,
                loggerFactory.CreateLogger("Relay.Scheduler"));
            scheduler.Start();
            var inbound = new InboundServer(settings, spool, loggerFactory, new SchedulerAdmission(scheduler), clock);
            await inbound.StartAsync(cancellationToken);
            foreach (var endpoint in inbound.EndPoints)
                log.LogInformation("listening: {Listener} on {EndPoint}", endpoint.Listener, endpoint.EndPoint);
            return new RelayHost(settings, spool, scheduler, inbound, log);
        }
        catch
        {
            if (scheduler is not null) await scheduler.DisposeAsync();
            await spool.DisposeAsync();
            throw;
        }
    }

    /// <summary>Stops accepting, lets in-flight work finish, leaves everything else in the spool.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_stopped) return;
        _stopped = true;
        await Inbound.StopAsync(cancellationToken);
        await Scheduler.StopAsync();
        await Spool.DisposeAsync();
        _log.LogInformation("stopped");
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await Inbound.DisposeAsync();
    }

    /// <summary>Back-pressure at RCPT comes from the scheduler's view of each virtual queue.</summary>
    private sealed class SchedulerAdmission(QueueScheduler scheduler) : IQueueAdmission
    {
        public bool HasRoom(string queueName) => scheduler.HasRoom(queueName);
    }
}
