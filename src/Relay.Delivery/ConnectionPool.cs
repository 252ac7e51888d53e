// ConnectionPool: SMTP connections per remote host, reused across messages. A host has at most
// MaxConnectionsPerHost busy slots; a connection is opened only when no idle one is left, and one being closed
// keeps a slot until it is closed, so open connections (busy + idle + closing) never exceed the limit, not even
// for a moment. Idle connections close after IdleTimeout or MaxMessagesPerConnection.
using System.Collections.Concurrent;

namespace Relay.Delivery;

/// <summary>One open SMTP session.</summary>
internal sealed class PooledConnection(RelaySmtpClient client)
{
    public RelaySmtpClient Client { get; } = client;
    public int Messages { get; set; }
    public DateTimeOffset IdleSince { get; set; }
    /// <summary>True when it came out of the idle pool (its server may have closed it meanwhile).</summary>
    public bool Reused { get; set; }
}

internal sealed class ConnectionPool : IAsyncDisposable
{
    internal sealed class Host(int slots)
    {
        public SemaphoreSlim Slots { get; } = new(slots, slots);
        public Stack<PooledConnection> Idle { get; } = new();
    }

    private readonly ConcurrentDictionary<string, Host> _hosts = new();
    private readonly DeliveryOptions _options;
    private readonly TimeProvider _clock;
    private readonly ITimer _sweeper;
    private int _opened;

    public ConnectionPool(DeliveryOptions options, TimeProvider clock)
    {
        _options = options;
        _clock = clock;
        var period = options.IdleTimeout < TimeSpan.FromSeconds(1) ? TimeSpan.FromSeconds(1) : options.IdleTimeout;
        _sweeper = clock.CreateTimer(_ => Sweep(), null, period, period);
    }

    /// <summary>Connections opened since start (for tests and metrics).</summary>
    public int Opened => _opened;

    /// <summary>Waits for a slot on <paramref name="key"/>; null when none frees up within ConnectionWait.</summary>
    public async Task<Slot?> AcquireAsync(string key, CancellationToken cancellationToken)
    {
        var host = _hosts.GetOrAdd(key, _ => new Host(Math.Max(1, _options.MaxConnectionsPerHost)));
        if (!host.Slots.Wait(0))
        {
            using var wait = new CancellationTokenSource(_options.ConnectionWait, _clock);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(wait.Token, cancellationToken);
            try
            {
                await host.Slots.WaitAsync(linked.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return null;
            }
        }
        // Expired idle connections are closed, each under a slot of its own taken before it leaves the idle stack
        // (idle ones hold none); at most one, when no slot is left, closes under ours and is awaited before this
        // slot opens anything. There are always enough: busy + idle never exceed the slots.
        PooledConnection? idle = null, closingUnderOurs = null;
        var expired = new List<PooledConnection>();
        lock (host.Idle)
        {
            while (host.Idle.TryPop(out var candidate))
            {
                if (IsFresh(candidate)) { idle = candidate; break; }
                if (host.Slots.Wait(0)) expired.Add(candidate);
                else if (closingUnderOurs is null) closingUnderOurs = candidate;
                else { host.Idle.Push(candidate); break; }
            }
        }
        foreach (var old in expired) _ = CloseThenReleaseAsync(host, old);
        if (closingUnderOurs is not null) await CloseAsync(closingUnderOurs);
        if (idle is not null) idle.Reused = true;
        return new Slot(this, host, idle);
    }

    internal void CountOpened() => Interlocked.Increment(ref _opened);

    private bool IsFresh(PooledConnection c) =>
        c.Client.IsConnected && _clock.GetUtcNow() - c.IdleSince < _options.IdleTimeout && c.Messages < _options.MaxMessagesPerConnection;

    private void Return(Host host, PooledConnection? connection, bool reusable)
    {
        if (connection is not null)
        {
            if (reusable && connection.Client.IsConnected && connection.Messages < _options.MaxMessagesPerConnection)
            {
                connection.IdleSince = _clock.GetUtcNow();
                connection.Reused = false;
                lock (host.Idle) host.Idle.Push(connection);
            }
            else
            {
                _ = CloseThenReleaseAsync(host, connection);
                return;
            }
        }
        host.Slots.Release();
    }

    /// <summary>A connection being closed is still open at the remote end: its slot frees once it is closed.</summary>
    private static async Task CloseThenReleaseAsync(Host host, PooledConnection connection)
    {
        try { await CloseAsync(connection); }
        finally { host.Slots.Release(); }
    }

    private void Sweep()
    {
        foreach (var host in _hosts.Values)
        {
            List<PooledConnection> keep = [], close = [];
            lock (host.Idle)
            {
                // Each stale one takes a slot before it leaves the stack (or stays for the next sweep or acquirer).
                while (host.Idle.TryPop(out var c)) (!IsFresh(c) && host.Slots.Wait(0) ? close : keep).Add(c);
                for (var i = keep.Count - 1; i >= 0; i--) host.Idle.Push(keep[i]);
            }
            foreach (var c in close) _ = CloseThenReleaseAsync(host, c);
        }
    }

    private static async Task CloseAsync(PooledConnection connection)
    {
        try
        {
            if (connection.Client.IsConnected)
            {
                using var quit = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await connection.Client.DisconnectAsync(true, quit.Token);
            }
        }
        catch (Exception)
        {
            // QUIT is a courtesy; the socket is closed by Dispose either way.
        }
        finally
        {
            connection.Client.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _sweeper.DisposeAsync();
        var closing = new List<Task>();
        foreach (var host in _hosts.Values)
            lock (host.Idle)
                while (host.Idle.TryPop(out var c)) closing.Add(CloseAsync(c));
        await Task.WhenAll(closing);
    }

    /// <summary>A busy slot on one host, with the idle connection it took (if any). Release exactly once.</summary>
    internal sealed class Slot(ConnectionPool pool, Host host, PooledConnection? idle)
    {
        private int _released;
        public PooledConnection? Connection { get; set; } = idle;

        public void Release(bool reusable)
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) pool.Return(host, Connection, reusable);
        }
    }
}
