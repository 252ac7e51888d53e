// InboundServer: the host-facing piece. Runs one Kestrel server per [server.listener.*] (an endpoint per bind),
// each speaking SMTP through SmtpConnectionHandler; implicit-TLS listeners get Kestrel's TLS layer. One server
// per listener lets a config reload add, remove or rebind a listener while the others' sessions carry on.
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Inbound.Session;
using Relay.Spool;

namespace Relay.Inbound;

/// <summary>An endpoint a listener is bound to (the real port when the config said 0).</summary>
public sealed record BoundEndPoint(string Listener, IPEndPoint EndPoint);

/// <summary>What a listener reload did (names of <c>[server.listener.*]</c> tables).</summary>
public sealed record ListenerReload(IReadOnlyList<string> Started, IReadOnlyList<string> Stopped, IReadOnlyList<string> Rebound);

/// <summary>The inbound SMTP server: every configured listener, started and stopped together, changed by reloads.</summary>
public sealed class InboundServer : IAsyncDisposable
{
    private static readonly TimeSpan DefaultStopTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan RebindWait = TimeSpan.FromSeconds(5);

    private readonly RelaySettings _settings;
    private readonly InboundRuntime _runtime;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _log;
    private readonly SemaphoreSlim _changing = new(1, 1);
    private readonly List<ListenerHost> _hosts = [];          // in config order; guarded by lock (_hosts)
    private readonly List<Task> _retiring = [];               // removed listeners finishing their sessions
    private readonly CancellationTokenSource _abortRetiring = new();
    private bool _started;

    /// <summary>One listener's Kestrel server and what it holds.</summary>
    private sealed record ListenerHost(ListenerSettings Settings, WebApplication App, List<ListenOptions> Endpoints, X509Certificate2? Certificate);

    /// <param name="settings">The loaded configuration ([server], [session], [local], [queue]).</param>
    /// <param name="spool">Where accepted messages go; 250 is sent only after its commit returns.</param>
    /// <param name="loggerFactory">Logging for sessions and Kestrel (default: none).</param>
    /// <param name="admission">Back-pressure asked at RCPT (default: every queue has room).</param>
    /// <param name="clock">Time for timeouts and trace headers (default: the system clock).</param>
    /// <param name="classify">The strategy (default: <c>settings.Queue.Strategy.Classify</c>). The host passes
    /// <c>LiveStrategy.Classify</c>, so a config reload reaches every new recipient.</param>
    public InboundServer(
        RelaySettings settings,
        IMessageSpool spool,
        ILoggerFactory? loggerFactory = null,
        IQueueAdmission? admission = null,
        TimeProvider? clock = null,
        Func<RecipientContext, StrategyDecision>? classify = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(spool);
        _settings = settings;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _log = _loggerFactory.CreateLogger("Relay.Inbound");
        _runtime = new InboundRuntime(
            settings, spool, admission ?? UnlimitedQueueAdmission.Instance,
            classify ?? settings.Queue.Strategy.Classify,
            clock ?? TimeProvider.System,
            _log);
    }

    /// <summary>Where each listener is bound; filled by <see cref="StartAsync"/>, changed by <see cref="ReconfigureAsync"/>.</summary>
    public IReadOnlyList<BoundEndPoint> EndPoints
    {
        get
        {
            lock (_hosts)
                return _hosts.SelectMany(h => h.Endpoints.Select(e => new BoundEndPoint(h.Settings.Name, e.IPEndPoint!))).ToList();
        }
    }

    /// <summary>Who hears about sessions, RCPT and end-of-data replies (metrics). Set before <see cref="StartAsync"/>.</summary>
    public IInboundEvents Events { get => _runtime.Events; set => _runtime.Events = value ?? NoInboundEvents.Instance; }

    /// <summary>Test hook: when false, loopback clients are treated like remote ones for the AUTH-needs-TLS rule.</summary>
    internal bool LoopbackIsLocal { get => _runtime.LoopbackIsLocal; set => _runtime.LoopbackIsLocal = value; }

    /// <summary>Sessions open right now.</summary>
    public int ActiveConnections => _runtime.Connections;

    /// <summary>Loads certificates, binds every listener and starts accepting.</summary>
    /// <exception cref="IOException">A bind failed (address in use) or a certificate could not be read.</exception>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_started)
        {
            throw new InvalidOperationException("already started");
        }

        _started = true;
        try
        {
            foreach (var listener in _settings.Server.Listeners)
            {
                var host = await StartListenerAsync(listener, retryBind: false, cancellationToken);
                lock (_hosts) _hosts.Add(host);
            }
        }
        catch
        {
            await StopHostsAsync(TakeHosts(), CancellationToken.None);
            throw;
        }
    }

    /// <summary>
    /// Applies a reloaded configuration: new sessions get the new <c>[session]</c>, <c>[local]</c> and hostname
    /// (sessions already open keep theirs); listeners added in <c>[server.listener.*]</c> start, removed ones stop
    /// accepting while their open sessions finish (up to the session timeout), and a listener whose bind, TLS or
    /// require-auth changed is rebound — its old sessions carry on over their established connections.
    /// </summary>
    /// <exception cref="IOException">A new bind failed; the listeners that could be started are running.</exception>
    public async Task<ListenerReload> ReconfigureAsync(RelaySettings settings, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        await _changing.WaitAsync(cancellationToken);
        try
        {
            _runtime.Settings = settings;
            var wanted = settings.Server.Listeners;
            var started = new List<string>();
            var stopped = new List<string>();
            var rebound = new List<string>();
            List<ListenerHost> current;
            lock (_hosts) current = [.. _hosts];
            foreach (var host in current)
            {
                var next = wanted.FirstOrDefault(l => l.Name == host.Settings.Name);
                if (next is not null && SameListener(host.Settings, next)) continue;
                lock (_hosts) _hosts.Remove(host);
                Retire(host, settings.Session.Timeout);
                (next is null ? stopped : rebound).Add(host.Settings.Name);
            }

            var order = wanted.Select(l => l.Name).ToList();
            List<Exception>? failures = null;
            foreach (var listener in wanted)
            {
                bool running;
                lock (_hosts) running = _hosts.Any(h => h.Settings.Name == listener.Name);
                if (running) continue;
                try
                {
                    var host = await StartListenerAsync(listener, retryBind: rebound.Contains(listener.Name), cancellationToken);
                    lock (_hosts)
                    {
                        _hosts.Add(host);
                        _hosts.Sort((a, b) => order.IndexOf(a.Settings.Name).CompareTo(order.IndexOf(b.Settings.Name)));
                    }
                    if (!rebound.Contains(listener.Name)) started.Add(listener.Name);
                    foreach (var e in host.Endpoints) _log.ListenerStarted(listener.Name, e.IPEndPoint!.ToString());
                }
                catch (Exception e) when (e is IOException or InvalidOperationException or System.Security.Cryptography.CryptographicException)
                {
                    (failures ??= []).Add(new IOException($"listener {listener.Name}: {e.Message}", e));
                }
            }
            foreach (var name in stopped) _log.ListenerStopped(name);
            if (failures is not null) throw failures.Count == 1 ? failures[0] : new IOException(string.Join("; ", failures.Select(f => f.Message)), new AggregateException(failures));
            return new ListenerReload(started, stopped, rebound);
        }
        finally
        {
            _changing.Release();
        }
    }

    private static bool SameListener(ListenerSettings a, ListenerSettings b) =>
        a.Bind.SequenceEqual(b.Bind) && Equals(a.Tls, b.Tls) && a.ImplicitTls == b.ImplicitTls && a.RequireAuth == b.RequireAuth;

    /// <summary>Stops accepting on a listener now; its sessions finish on their own (bounded), then it is disposed.</summary>
    private void Retire(ListenerHost host, TimeSpan sessionTimeout)
    {
        var task = Task.Run(async () =>
        {
            using var timeout = new CancellationTokenSource(sessionTimeout + TimeSpan.FromMinutes(1), _runtime.Clock);
            using var bound = CancellationTokenSource.CreateLinkedTokenSource(_abortRetiring.Token, timeout.Token);
            await StopHostsAsync([host], bound.Token);
        });
        lock (_retiring)
        {
            _retiring.RemoveAll(t => t.IsCompleted);
            _retiring.Add(task);
        }
    }

    private async Task<ListenerHost> StartListenerAsync(ListenerSettings settings, bool retryBind, CancellationToken cancellationToken)
    {
        var deadline = _runtime.Clock.GetUtcNow() + RebindWait;
        while (true)
        {
            var certificate = LoadCertificate(settings.Tls);
            var listener = new ListenerRuntime(settings, certificate);
            var endpoints = new List<ListenOptions>();
            var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
            builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
            // Every stop passes its own bound (StopAsync, Retire), so a removed listener's sessions are not cut at 30 s.
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = Timeout.InfiniteTimeSpan);
            builder.WebHost.UseKestrel(kestrel =>
            {
                kestrel.AddServerHeader = false;
                kestrel.Limits.MaxConcurrentConnections = null; // ours, with a 421 reply (SmtpConnectionHandler)
                var handler = new SmtpConnectionHandler(_runtime, listener);
                foreach (var bind in settings.Bind)
                {
                    kestrel.Listen(bind, options =>
                    {
                        if (settings.ImplicitTls)
                        {
                            options.UseHttps(new HttpsConnectionAdapterOptions
                            {
                                ServerCertificate = certificate
                                    ?? throw new InvalidOperationException($"listener {settings.Name}: implicit-tls needs tls certificate and key"),
                                HandshakeTimeout = _settings.Session.Timeout,
                            });
                        }

                        options.Run(handler.OnConnectedAsync);
                        endpoints.Add(options);
                    });
                }
            });

            var app = builder.Build();
            try
            {
                await app.StartAsync(cancellationToken);
                return new ListenerHost(settings, app, endpoints, certificate);
            }
            catch (IOException e) when (retryBind && IsAddressInUse(e) && _runtime.Clock.GetUtcNow() < deadline)
            {
                // Rebinding the port the old listener is leaving: its unbind may not have happened yet.
                await app.DisposeAsync();
                certificate?.Dispose();
                await Task.Delay(TimeSpan.FromMilliseconds(25), _runtime.Clock, cancellationToken);
            }
            catch
            {
                await app.DisposeAsync();
                certificate?.Dispose();
                throw;
            }
        }
    }

    private static bool IsAddressInUse(Exception e) =>
        e is AddressInUseException || e.InnerException is AddressInUseException
        || e.InnerException is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse };

    /// <summary>
    /// Stops accepting; idle sessions get 421 4.3.2 at once, a message in flight is finished
    /// (until <paramref name="cancellationToken"/>, or 30 s when it cannot be cancelled, aborts it uncommitted).
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _runtime.Stop();
        using var fallback = cancellationToken.CanBeCanceled ? null : new CancellationTokenSource(DefaultStopTimeout, _runtime.Clock);
        var token = fallback?.Token ?? cancellationToken;
        await using var abort = token.Register(() => _abortRetiring.Cancel());
        Task[] retiring;
        lock (_retiring) retiring = [.. _retiring];
        await Task.WhenAll(StopHostsAsync(TakeHosts(), token), Task.WhenAll(retiring));
    }

    private List<ListenerHost> TakeHosts()
    {
        lock (_hosts)
        {
            var hosts = _hosts.ToList();
            _hosts.Clear();
            return hosts;
        }
    }

    private static async Task StopHostsAsync(IEnumerable<ListenerHost> hosts, CancellationToken cancellationToken)
    {
        await Task.WhenAll(hosts.Select(async host =>
        {
            try
            {
                await host.App.StopAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                await host.App.DisposeAsync();
                host.Certificate?.Dispose();
            }
        }));
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None);
        _abortRetiring.Dispose();
    }

    private static X509Certificate2? LoadCertificate(TlsSettings? tls)
    {
        if (tls is null)
        {
            return null;
        }

        using var pem = X509Certificate2.CreateFromPemFile(tls.Certificate, tls.Key);
        // An ephemeral PEM key cannot be used by SslStream on every platform; re-import as PKCS#12.
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }
}
