// InboundServer: the host-facing piece. Runs Kestrel with one endpoint per [server.listener.*] bind,
// each speaking SMTP through SmtpConnectionHandler; implicit-TLS listeners get Kestrel's TLS layer.
using System.Net;
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

/// <summary>The inbound SMTP server: every configured listener, started and stopped together.</summary>
public sealed class InboundServer : IAsyncDisposable
{
    private readonly RelaySettings _settings;
    private readonly InboundRuntime _runtime;
    private readonly ILoggerFactory _loggerFactory;
    private readonly List<(string Listener, ListenOptions Options)> _endpoints = [];
    private readonly List<X509Certificate2> _certificates = [];
    private WebApplication? _app;

    /// <param name="settings">The loaded configuration ([server], [session], [local], [queue]).</param>
    /// <param name="spool">Where accepted messages go; 250 is sent only after its commit returns.</param>
    /// <param name="loggerFactory">Logging for sessions and Kestrel (default: none).</param>
    /// <param name="admission">Back-pressure asked at RCPT (default: every queue has room).</param>
    /// <param name="clock">Time for timeouts and trace headers (default: the system clock).</param>
    /// <param name="classify">The strategy (default: <c>settings.Queue.Strategy.Classify</c>); tests may inject one.</param>
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
        _runtime = new InboundRuntime(
            settings, spool, admission ?? UnlimitedQueueAdmission.Instance,
            classify ?? settings.Queue.Strategy.Classify,
            clock ?? TimeProvider.System,
            _loggerFactory.CreateLogger("Relay.Inbound"));
    }

    /// <summary>Where each listener is bound; filled by <see cref="StartAsync"/>.</summary>
    public IReadOnlyList<BoundEndPoint> EndPoints =>
        _endpoints.Select(e => new BoundEndPoint(e.Listener, e.Options.IPEndPoint!)).ToList();

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
        if (_app is not null)
        {
            throw new InvalidOperationException("already started");
        }

        var listeners = _settings.Server.Listeners.Select(l => new ListenerRuntime(l, LoadCertificate(l.Tls))).ToList();
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.WebHost.UseKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxConcurrentConnections = null; // ours, with a 421 reply (SmtpConnectionHandler)
            foreach (var listener in listeners)
            {
                var handler = new SmtpConnectionHandler(_runtime, listener);
                foreach (var bind in listener.Settings.Bind)
                {
                    kestrel.Listen(bind, options =>
                    {
                        if (listener.Settings.ImplicitTls)
                        {
                            options.UseHttps(new HttpsConnectionAdapterOptions
                            {
                                ServerCertificate = listener.Certificate
                                    ?? throw new InvalidOperationException($"listener {listener.Settings.Name}: implicit-tls needs tls certificate and key"),
                                HandshakeTimeout = _settings.Session.Timeout,
                            });
                        }

                        options.Run(handler.OnConnectedAsync);
                        _endpoints.Add((listener.Settings.Name, options));
                    });
                }
            }
        });

        var app = builder.Build();
        app.Lifetime.ApplicationStopping.Register(_runtime.Stop);
        await app.StartAsync(cancellationToken);
        _app = app;
    }

    /// <summary>
    /// Stops accepting; idle sessions get 421 4.3.2 at once, a message in flight is finished
    /// (until <paramref name="cancellationToken"/> or the 30 s shutdown timeout aborts it uncommitted).
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _runtime.Stop();
        if (_app is { } app)
        {
            await app.StopAsync(cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is { } app)
        {
            await StopAsync(CancellationToken.None);
            await app.DisposeAsync();
            _app = null;
        }

        foreach (var certificate in _certificates)
        {
            certificate.Dispose();
        }
    }

    private X509Certificate2? LoadCertificate(TlsSettings? tls)
    {
        if (tls is null)
        {
            return null;
        }

        using var pem = X509Certificate2.CreateFromPemFile(tls.Certificate, tls.Key);
        // An ephemeral PEM key cannot be used by SslStream on every platform; re-import as PKCS#12.
        var certificate = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        _certificates.Add(certificate);
        return certificate;
    }
}
