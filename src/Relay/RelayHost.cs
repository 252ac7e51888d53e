// RelayHost: wires the stages in their one-way order — spool, scheduler (with delivery, delivery events and
// DSN behind it), then the SMTP listeners and the HTTP submission API in front — and stops them in reverse.
using Microsoft.Extensions.Logging;
using Relay.Admin;
using Relay.Admin.Metrics;
using Relay.Admin.Observation;
using Relay.Api;
using Relay.Config;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Events;
using Relay.Inbound;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay;

/// <summary>A running relay: every stage of one process, started and stopped together.</summary>
public sealed class RelayHost : IAsyncDisposable
{
    private readonly ILogger _log;
    private readonly SemaphoreSlim _reloading = new(1, 1);
    private volatile bool _stopped;
    private IDeliveryAgent? _deliveryAgent;
    private TimeProvider _clock = TimeProvider.System;
    private DeliveryEventLog? _events;
    private WebhookDispatcher? _webhooks;

    private RelayHost(RelaySettings settings, LiveStrategy strategy, FileSpool spool, QueueScheduler scheduler, InboundServer inbound,
        RelayMetrics metrics, SlaTracker sla, ILogger log)
    {
        Settings = settings;
        Strategy = strategy;
        Spool = spool;
        Scheduler = scheduler;
        Inbound = inbound;
        Metrics = metrics;
        Sla = sla;
        _log = log;
    }

    /// <summary>The settings in force: the last reload's, except sections that need a restart (kept as started).</summary>
    public RelaySettings Settings { get; private set; }
    /// <summary>The one strategy holder every stage classifies new recipients with; a reload swaps it.</summary>
    public LiveStrategy Strategy { get; }
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
    /// <param name="createReports">Builds the DSN stage from the spool and the host's live strategy.</param>
    public static async Task<RelayHost> StartAsync(
        RelaySettings settings,
        Func<ISpoolStore, IDeliveryAgent> createAgent,
        Func<ISpoolStore, LiveStrategy, IDeliveryReports> createReports,
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
        DeliveryEventLog? events = null;
        try
        {
            // Delivery and DSN outcomes pass through observers that feed metrics, SLA and history.
            var adminOptions = new AdminOptions { Retention = settings.Spool.Retention };
            var strategy = new LiveStrategy(settings.Queue);
            var metrics = new RelayMetrics();
            var history = new DeliveryHistory(adminOptions);
            var sla = new SlaTracker(clock, adminOptions, loggerFactory.CreateLogger("Relay.Sla"));
            sla.SetTargets(SlaTracker.TargetsFrom(settings.Queue));
            // Delivery events of API-submitted mail (status API, webhooks), inside the observers so that a
            // report the scheduler repeats is counted once.
            events = DeliveryEventLog.Open(Path.Combine(settings.Spool.Path, "events"),
                new DeliveryEventLogOptions { Retention = settings.Spool.Retention }, clock, spool, loggerFactory.CreateLogger("Relay.Events"));
            var deliveryAgent = createAgent(spool);
            var agent = new ObservedDeliveryAgent(
                new EventingDeliveryAgent(deliveryAgent, events, clock, loggerFactory.CreateLogger("Relay.Events")), metrics, history, clock);
            var reports = new ObservedDeliveryReports(
                new EventingDeliveryReports(createReports(spool, strategy), events, clock), metrics, sla, history, clock);
            scheduler = new QueueScheduler(spool, settings.Queue, agent, reports, clock,
                loggerFactory.CreateLogger("Relay.Scheduler"))
            {
                Operations = events,   // requeue and cancel reach API status and webhooks
            };
            scheduler.Start();
            inbound = new InboundServer(settings, spool, loggerFactory, new SchedulerAdmission(scheduler), clock, strategy.Classify)
            {
                Events = new MetricsInboundEvents(metrics),
            };
            await inbound.StartAsync(cancellationToken);
            foreach (var endpoint in inbound.EndPoints)
                log.LogInformation("listening: {Listener} on {EndPoint}", endpoint.Listener, endpoint.EndPoint);
            var host = new RelayHost(settings, strategy, spool, scheduler, inbound, metrics, sla, log)
            {
                _deliveryAgent = deliveryAgent, _clock = clock, _events = events,
            };
            host._webhooks = new WebhookDispatcher(events, ApiWebhooks.TargetsFrom(settings.Api), clock: clock,
                logger: loggerFactory.CreateLogger("Relay.Webhooks"));
            await host._webhooks.StartAsync(cancellationToken);
            if (settings.Api.Enabled)
            {
                host.Api = new ApiServer(settings.Api, settings.Server.Hostname, spool, strategy.Classify,
                    events, events, clock, loggerFactory) { QueueHasRoom = scheduler.HasRoom };
                await host.Api.StartAsync(cancellationToken);
                log.LogInformation("HTTP submission API on {EndPoint}", host.Api.EndPoint);
            }
            if (settings.Admin.Enabled)
            {
                host.Admin = new AdminServer(settings.Admin, new AdminServices
                {
                    Spool = spool, Scheduler = scheduler, Metrics = metrics, Sla = sla, History = history, Clock = clock,
                    Control = scheduler,
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
            if (events is not null) await events.DisposeAsync();
            await spool.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Re-reads the config file (SIGHUP and <c>POST /api/reload</c>). An invalid config is refused with its errors
    /// and the running one stays. A valid one is applied: the strategy for new recipients (SMTP, DSNs, API — one
    /// <see cref="LiveStrategy"/>), schedules and virtual queues (queued recipients keep their schedule if it still
    /// exists, else move to the fallback), SLA targets, listeners, and <c>[session]</c>/<c>[local]</c> for new
    /// sessions, and the HTTP API's clients and templates (<see cref="ApiServer.Reconfigure"/>). Changed keys that
    /// only a restart applies (spool, resolver, delivery, admin, dsn, hostname for delivery and DSNs, api bind,
    /// idempotency window and webhooks) are named in the result and logged.
    /// </summary>
    public async Task<ReloadResult> ReloadAsync(CancellationToken cancellationToken)
    {
        await _reloading.WaitAsync(cancellationToken);
        try
        {
            if (_stopped)
            {
                _log.LogWarning("reload refused: the relay is stopping");
                return ReloadResult.Refused([new ConfigError(Settings.SourcePath, 0, "", "the relay is stopping")]);
            }
            var loaded = ConfigLoader.LoadFile(Settings.SourcePath);
            if (!loaded.Ok)
            {
                foreach (var error in loaded.Errors) _log.LogError("reload refused: {Error}", error.ToString());
                _log.LogWarning("reload refused: {Count} config error(s) in {Path}; the running config is kept", loaded.Errors.Count, Settings.SourcePath);
                return ReloadResult.Refused(loaded.Errors);
            }
            var next = loaded.Settings!;
            var running = Settings;
            var restart = ReloadDiff.NeedsRestart(running, next);

            // The scheduler learns the new schedules and queues before the strategy can hand them out; when it
            // cannot (stopping) this throws and the strategy in force stays as it was.
            SchedulerReload queues;
            try
            {
                queues = await Scheduler.ReconfigureAsync(next.Queue);   // queued recipients, virtual queues
            }
            catch (Exception e) when (e is InvalidOperationException or IOException)
            {
                _log.LogError("reload refused: the scheduler did not take the new [queue]: {Error}; the running config is kept", e.Message);
                return ReloadResult.Refused([new ConfigError(Settings.SourcePath, 0, "queue", "not applied: " + e.Message)]);
            }
            Strategy.Swap(next.Queue);                                   // new recipients, from now on
            Sla.SetTargets(SlaTracker.TargetsFrom(next.Queue));
            string listenerText;
            try
            {
                // Not cancellable: the strategy is swapped already, and a caller giving up (an admin request aborted)
                // between retiring a listener and binding its successor would leave the port closed.
                var listeners = await Inbound.ReconfigureAsync(next, CancellationToken.None);
                listenerText = ReloadDiff.Describe(listeners);
                foreach (var endpoint in Inbound.EndPoints.Where(e => listeners.Started.Contains(e.Listener) || listeners.Rebound.Contains(e.Listener)))
                    _log.LogInformation("listening: {Listener} on {EndPoint}", endpoint.Listener, endpoint.EndPoint);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                listenerText = "listeners: " + e.Message;
                _log.LogError("reload: {Error}", listenerText);
            }

            // [api] clients and [templates] apply to the next request; bind, idempotency window and webhooks at restart.
            var apiApplied = Api is not null && ReloadDiff.ApiChanged(running.Api, next.Api);
            if (apiApplied) Api!.Reconfigure(next.Api);

            // What runs now: the new config, except the sections only a restart applies.
            Settings = next with
            {
                Spool = running.Spool, Resolver = running.Resolver, Delivery = running.Delivery, Admin = running.Admin, Dsn = running.Dsn,
                Api = Api is null ? running.Api : next.Api with
                {
                    Bind = running.Api.Bind, IdempotencyWindow = running.Api.IdempotencyWindow, StateDirectory = running.Api.StateDirectory,
                },
            };
            var parts = new List<string> { "strategy, schedules and SLA targets applied" };
            if (apiApplied) parts.Add("[api] clients and [templates] applied");
            if (queues.QueuesAdded.Count > 0) parts.Add("virtual queues added: " + string.Join(", ", queues.QueuesAdded));
            if (queues.QueuesRemoved.Count > 0) parts.Add("virtual queues removed (in-flight deliveries finish): " + string.Join(", ", queues.QueuesRemoved));
            if (queues.RecipientsMoved > 0) parts.Add($"{queues.RecipientsMoved} queued recipient(s) moved to another schedule or queue");
            if (queues.RerouteError is { } rerouteError)
            {
                parts.Add("moving queued recipients of removed schedules was not recorded durably: " + rerouteError);
                _log.LogError("reload: the new [queue] is in force, but moving queued recipients was not recorded durably: {Error}", rerouteError);
            }
            parts.Add(listenerText);
            parts.Add("[session] and [local] apply to new sessions");
            if (restart.Count > 0)
            {
                parts.Add("needs restart: " + string.Join(", ", restart));
                _log.LogWarning("reload: these changes need a restart and are not applied: {Keys}", string.Join(", ", restart));
            }
            var summary = string.Join("; ", parts);
            _log.LogInformation("reload: {Path}: {Summary}", Settings.SourcePath, summary);
            return ReloadResult.Success(summary);
        }
        finally
        {
            _reloading.Release();
        }
    }

    /// <summary>
    /// Graceful stop (SIGTERM): stops accepting (idle sessions get 421, a message being received is finished), lets
    /// deliveries in flight finish and be recorded within <paramref name="cancellationToken"/> (or <c>[server]
    /// shutdown-timeout</c> when it cannot be cancelled), and leaves everything else in the spool.
    /// </summary>
    /// <summary>How long a stop waits for a reload in progress before it goes on without it.</summary>
    private static readonly TimeSpan ReloadWait = TimeSpan.FromSeconds(10);

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        using var bound = cancellationToken.CanBeCanceled ? null : new CancellationTokenSource(Settings.Server.ShutdownTimeout, _clock);
        var token = bound?.Token ?? cancellationToken;
        // Waits (shortly, within the shutdown bound) for a reload in progress to finish; no reload starts afterwards
        // (ReloadAsync checks _stopped under the same lock). One that outlasts the wait cannot reopen anything: the
        // scheduler and the listeners refuse changes once stopping.
        var entered = false;
        try
        {
            entered = await _reloading.WaitAsync(ReloadWait, token);
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested) { }
        try
        {
            if (_stopped) return;
            _stopped = true;
        }
        finally
        {
            if (entered) _reloading.Release();
        }
        if (Admin is not null) await Admin.StopAsync(token);
        if (Api is not null) await Api.StopAsync(token);
        await Inbound.StopAsync(token);
        if (!await Scheduler.DrainAsync(token))
            _log.LogWarning("shutdown timeout: deliveries still in flight are cancelled; their recipients stay queued");
        await Scheduler.StopAsync();
        if (_webhooks is not null) await _webhooks.StopAsync(CancellationToken.None);
        if (_deliveryAgent is IAsyncDisposable disposable) await disposable.DisposeAsync();   // QUIT pooled connections
        if (_events is not null) await _events.DisposeAsync();
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
