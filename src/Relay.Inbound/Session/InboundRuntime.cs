// InboundRuntime: what every SMTP session of one server shares (settings, spool, policy hooks, shutdown).
using System.Collections.Concurrent;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Spool;

namespace Relay.Inbound.Session;

internal sealed class InboundRuntime(
    RelaySettings settings,
    IMessageSpool spool,
    IQueueAdmission admission,
    Func<RecipientContext, StrategyDecision> classify,
    TimeProvider clock,
    ILogger logger)
{
    private readonly ConcurrentDictionary<string, DateTimeOffset> _queueFullLogged = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private int _connections;

    private volatile RelaySettings _settings = settings;

    /// <summary>Replaced by a reload; a session takes the value in force when it starts and keeps it.</summary>
    public RelaySettings Settings { get => _settings; set => _settings = value; }
    public IMessageSpool Spool { get; } = spool;
    public IQueueAdmission Admission { get; } = admission;
    public Func<RecipientContext, StrategyDecision> Classify { get; } = classify;
    public TimeProvider Clock { get; } = clock;
    public ILogger Logger { get; } = logger;

    /// <summary>Loopback clients may AUTH without TLS (DESIGN: "AUTH only over TLS unless on loopback").
    /// Tests turn this off to exercise the remote-client rule without leaving loopback.</summary>
    public bool LoopbackIsLocal { get; set; } = true;

    /// <summary>Traffic counters (metrics); set before the server starts.</summary>
    public IInboundEvents Events { get; set; } = NoInboundEvents.Instance;

    /// <summary>Cancelled when the server stops: sessions waiting for a command answer 421 4.3.2.</summary>
    public CancellationToken Stopping => _stopping.Token;

    public int Connections => Volatile.Read(ref _connections);

    public void Stop() => _stopping.Cancel();

    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _connections) <= Settings.Session.MaxConnections)
        {
            return true;
        }

        Interlocked.Decrement(ref _connections);
        return false;
    }

    public void Leave() => Interlocked.Decrement(ref _connections);

    /// <summary>Back-pressure warnings: at most one a minute per queue (STYLE.md §8.14).</summary>
    public void LogQueueFull(string queue)
    {
        var now = Clock.GetUtcNow();
        var first = !_queueFullLogged.TryGetValue(queue, out var last);
        var due = first ? _queueFullLogged.TryAdd(queue, now)
                        : now - last >= TimeSpan.FromMinutes(1) && _queueFullLogged.TryUpdate(queue, now, last);
        if (due)
        {
            Logger.QueueFull(queue);
        }
    }
}

/// <summary>One configured listener plus its loaded certificate (null without <c>tls</c>).</summary>
internal sealed record ListenerRuntime(ListenerSettings Settings, X509Certificate2? Certificate);
