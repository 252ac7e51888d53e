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
public sealed record ListenerReload(IReadOnlyList<string> Started, IReadOnlyList<string> Stopped, IReadOnlyList<string> Rebound)
{
    /// <summary>
    /// Changes that could not be applied, one text each (<c>name: reason</c>): a certificate or key that cannot be
    /// read or does not match, or a bind that failed. A listener that was running keeps running as it was.
    /// </summary>
    public IReadOnlyList<string> Refused { get; init; } = [];
}

/// <summary>The inbound SMTP server: every configured listener, started and stopped together, changed by reloads.</summary>
public sealed class InboundServer : IAsyncDisposable
{
    private static readonly TimeSpan DefaultStopTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan RebindWait = TimeSpan.FromSeconds(5);

    private readonly InboundRuntime _runtime;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _log;
    private readonly SemaphoreSlim _changing = new(1, 1);
    private readonly List<ListenerHost> _hosts = [];          // in config order; guarded by lock (_hosts)
    private readonly List<Task> _retiring = [];               // removed listeners finishing their sessions
    private readonly CancellationTokenSource _abortRetiring = new();
    private bool _started;
    private volatile bool _stopped;

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
            foreach (var listener in _runtime.Settings.Server.Listeners)
            {
                var host = await StartListenerAsync(listener, Prepare(listener), retryBind: false, cancellationToken);
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
    /// Every certificate is loaded before any listener is retired: a change whose certificate or key cannot be read
    /// (or do not match) is refused and the running listener keeps accepting as it was. A new bind that does not
    /// take a port the old listener holds is made before the old one is retired; one that does, and then fails,
    /// brings the old listener back. Refused changes are listed in <see cref="ListenerReload.Refused"/>.
    /// </summary>
    public async Task<ListenerReload> ReconfigureAsync(RelaySettings settings, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        await _changing.WaitAsync(cancellationToken);
        try
        {
            if (_stopped) throw new InvalidOperationException("the SMTP listeners are stopped");
            // From here the change runs to its end, whatever the caller does (each bind retries for RebindWait at
            // most): giving up between retiring a listener and binding its successor would leave the port closed.
            cancellationToken = CancellationToken.None;
            _runtime.Settings = settings;
            var wanted = settings.Server.Listeners;
            var started = new List<string>();
            var stopped = new List<string>();
            var rebound = new List<string>();
            var refused = new List<string>();
            List<ListenerHost> current;
            lock (_hosts) current = [.. _hosts];
            var order = wanted.Select(l => l.Name).ToList();

            // 1. Certificates first, while nothing has changed yet.
            var prepared = new List<(ListenerSettings Listener, ListenerHost? Old, X509Certificate2? Certificate)>();
            foreach (var listener in wanted)
            {
                var old = current.FirstOrDefault(h => h.Settings.Name == listener.Name);
                if (old is not null && SameListener(old.Settings, listener)) continue;
                try
                {
                    prepared.Add((listener, old, Prepare(listener)));
                }
                catch (Exception e) when (IsListenerFailure(e))
                {
                    refused.Add(Refusal(listener.Name, e, old is null ? "not started" : "the running listener is kept"));
                }
            }

            // 2. Removed listeners stop accepting (a copy of each certificate is kept in case one comes back).
            var removed = new Dictionary<ListenerHost, X509Certificate2?>(ReferenceEqualityComparer.Instance);
            foreach (var host in current.Where(h => wanted.All(l => l.Name != h.Settings.Name)))
            {
                lock (_hosts) _hosts.Remove(host);
                removed[host] = Keep(host);
                Retire(host, settings.Session.Timeout);
                stopped.Add(host.Settings.Name);
            }

            // 3. Added and changed listeners.
            foreach (var (listener, old, certificate) in prepared)
            {
                if (old is null)
                {
                    // A port a listener removed just now is leaving (a renamed listener, a port moved): wait for it.
                    var freed = removed.Keys.Where(h => TakesPortOf(listener, h)).ToList();
                    try
                    {
                        Add(await StartListenerAsync(listener, certificate, retryBind: freed.Count > 0, cancellationToken), order);
                        started.Add(listener.Name);
                    }
                    catch (Exception e) when (IsListenerFailure(e))
                    {
                        // Bring the removed listener(s) back rather than leave their port closed.
                        var outcome = "not started";
                        foreach (var host in freed)
                        {
                            var keep = removed[host];
                            removed[host] = null;   // owned by the restore now
                            var error = await RestoreAsync(host, keep, order, cancellationToken);
                            if (error is null) stopped.Remove(host.Settings.Name);
                            outcome += error is null ? $"; listener {host.Settings.Name} was restored"
                                                     : $"; listener {host.Settings.Name} is DOWN: {error}";
                        }
                        refused.Add(Refusal(listener.Name, e, outcome));
                    }
                    continue;
                }
                var takesOldPort = TakesPortOf(listener, old);
                if (!takesOldPort)
                {
                    // The new binds are free of the old listener: bind them first, retire the old one only then.
                    try
                    {
                        var host = await StartListenerAsync(listener, certificate, retryBind: false, cancellationToken);
                        lock (_hosts) _hosts.Remove(old);
                        Retire(old, settings.Session.Timeout);
                        Add(host, order);
                        rebound.Add(listener.Name);
                    }
                    catch (Exception e) when (IsListenerFailure(e))
                    {
                        refused.Add(Refusal(listener.Name, e, "the running listener is kept"));
                    }
                    continue;
                }
                lock (_hosts) _hosts.Remove(old);
                // Retire disposes the old certificate; the restore uses a copy (its files may be gone by now).
                var kept = Keep(old);
                Retire(old, settings.Session.Timeout);
                try
                {
                    Add(await StartListenerAsync(listener, certificate, retryBind: true, cancellationToken), order);
                    rebound.Add(listener.Name);
                    kept?.Dispose();
                }
                catch (Exception e) when (IsListenerFailure(e))
                {
                    // Its port is free again (or was never ours to take): bring the old listener back as it was.
                    var error = await RestoreAsync(old, kept, order, cancellationToken);
                    refused.Add(Refusal(listener.Name, e, error is null ? "the previous listener settings were restored" : "the listener is DOWN: " + error));
                }
            }
            foreach (var keep in removed.Values) keep?.Dispose();
            foreach (var name in stopped) _log.ListenerStopped(name);
            foreach (var text in refused) _log.ListenerChangeRefused(text);
            return new ListenerReload(started, stopped, rebound) { Refused = refused };
        }
        finally
        {
            _changing.Release();
        }
    }

    /// <summary>Starts a retired listener again as it was bound; null when it runs, else why it could not.</summary>
    private async Task<string?> RestoreAsync(ListenerHost host, X509Certificate2? certificate, List<string> order, CancellationToken cancellationToken)
    {
        try
        {
            Add(await StartListenerAsync(AsBound(host), certificate, retryBind: true, cancellationToken), order);
            return null;
        }
        catch (Exception e) when (IsListenerFailure(e))
        {
            return e.Message;
        }
    }

    /// <summary>The host's settings with the ports it really had (a bind to port 0 comes back on the same port).</summary>
    private static ListenerSettings AsBound(ListenerHost host) =>
        host.Settings with { Bind = host.Endpoints.Select(e => e.IPEndPoint!).ToList() };

    /// <summary>A copy of the host's certificate (null without TLS) that outlives the host.</summary>
    private static X509Certificate2? Keep(ListenerHost host) =>
        host.Certificate is null ? null : X509CertificateLoader.LoadPkcs12(host.Certificate.Export(X509ContentType.Pkcs12), null);

    private void Add(ListenerHost host, List<string> order)
    {
        lock (_hosts)
        {
            _hosts.Add(host);
            _hosts.Sort((a, b) => order.IndexOf(a.Settings.Name).CompareTo(order.IndexOf(b.Settings.Name)));
        }
        foreach (var e in host.Endpoints) _log.ListenerStarted(host.Settings.Name, e.IPEndPoint!.ToString());
    }

    /// <summary>True when one of the listener's binds names a port the running <paramref name="old"/> host is bound to.</summary>
    private static bool TakesPortOf(ListenerSettings listener, ListenerHost old) =>
        listener.Bind.Any(b => b.Port != 0 && old.Endpoints.Any(e => e.IPEndPoint?.Port == b.Port));

    private static bool IsListenerFailure(Exception e) =>
        e is IOException or InvalidOperationException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException;

    private static string Refusal(string name, Exception e, string outcome) => $"{name}: {e.Message} ({outcome})";

    /// <summary>The listener's certificate, loaded and checked against its key (null without TLS).</summary>
    private static X509Certificate2? Prepare(ListenerSettings settings)
    {
        X509Certificate2? certificate;
        try
        {
            certificate = LoadCertificate(settings.Tls);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException
                                  or System.Security.Cryptography.CryptographicException)
        {
            // Unreadable, not PEM, or a key that does not match the certificate (ArgumentException).
            throw new IOException($"tls certificate {settings.Tls!.Certificate} / key {settings.Tls.Key}: {e.Message}", e);
        }
        if (settings.ImplicitTls && certificate is null)
            throw new InvalidOperationException($"listener {settings.Name}: implicit-tls needs tls certificate and key");
        return certificate;
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

    /// <summary>Binds and starts one listener; it owns <paramref name="certificate"/> from now on (disposed on failure).</summary>
    private async Task<ListenerHost> StartListenerAsync(ListenerSettings settings, X509Certificate2? certificate, bool retryBind,
                                                       CancellationToken cancellationToken)
    {
        var deadline = _runtime.Clock.GetUtcNow() + RebindWait;
        while (true)
        {
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
                                HandshakeTimeout = _runtime.Settings.Session.Timeout,   // the settings in force (a reload replaces them)
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
        _stopped = true;   // no reload binds a listener from now on
        _runtime.Stop();
        using var fallback = cancellationToken.CanBeCanceled ? null : new CancellationTokenSource(DefaultStopTimeout, _runtime.Clock);
        var token = fallback?.Token ?? cancellationToken;
        // A reload at work (bounded by RebindWait per listener) finishes first, so none of its listeners is left open.
        var entered = false;
        try
        {
            await _changing.WaitAsync(token);
            entered = true;
        }
        catch (OperationCanceledException) { }
        if (entered) _changing.Release();
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
