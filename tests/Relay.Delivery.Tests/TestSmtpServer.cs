// TestSmtpServer: a scriptable SMTP server on a loopback address. It can greet with 4xx, answer each RCPT
// as told, delay, drop the connection mid-DATA, advertise (or not) DSN, SMTPUTF8, SIZE and STARTTLS, and it
// records every command line and exactly the DATA bytes it received.
using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Relay.Delivery.Tests;

public sealed record ReceivedMessage(string MailFrom, IReadOnlyList<string> RcptTo, byte[] WireData, byte[] Content, bool Tls, int Connection);

public sealed class TestSmtpServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accept;
    private readonly List<Task> _sessions = [];
    private int _connections, _active, _maxActive;

    public TestSmtpServer(IPAddress address, int port)
    {
        _listener = new TcpListener(address, port);
        _listener.Start();
        _accept = Task.Run(AcceptAsync);
    }

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndpoint;

    // --- script ---
    public string Greeting { get; set; } = "220 mx.test ESMTP ready";
    public bool Dsn { get; set; }
    public bool SmtpUtf8 { get; set; }
    public bool EightBitMime { get; set; } = true;
    public bool Pipelining { get; set; }
    public long? Size { get; set; }
    public X509Certificate2? Certificate { get; set; }
    public string MailReply { get; set; } = "250 2.1.0 Ok";
    public Func<string, string> RcptReply { get; set; } = _ => "250 2.1.5 Ok";
    public string DataReply { get; set; } = "250 2.0.0 Ok: queued";
    /// <summary>Close the connection after this many DATA bytes (no reply).</summary>
    public int? DropAfterDataBytes { get; set; }
    public TimeSpan DataDelay { get; set; }
    /// <summary>How long the server takes to answer QUIT (the connection stays open and counted meanwhile).</summary>
    public TimeSpan QuitDelay { get; set; }

    // --- records ---
    public ConcurrentQueue<ReceivedMessage> Messages { get; } = new();
    public ConcurrentQueue<string> Commands { get; } = new();
    public int Connections => Volatile.Read(ref _connections);
    public int MaxConcurrentConnections => Volatile.Read(ref _maxActive);

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            lock (_sessions) _sessions.Add(Task.Run(() => SessionAsync(client)));
        }
    }

    private async Task SessionAsync(TcpClient tcp)
    {
        var number = Interlocked.Increment(ref _connections);
        var active = Interlocked.Increment(ref _active);
        int seen;
        while ((seen = Volatile.Read(ref _maxActive)) < active && Interlocked.CompareExchange(ref _maxActive, active, seen) != seen) { }
        // A session stops counting as active at QUIT (before the 221: the client may connect again the moment it
        // reads it) or when it ends otherwise.
        var left = 0;
        void Leave() { if (Interlocked.Exchange(ref left, 1) == 0) Interlocked.Decrement(ref _active); }
        try
        {
            using (tcp)
            {
                await RunAsync(new LineStream(tcp.GetStream()), number, Leave, _stop.Token);
            }
        }
        catch (Exception) when (_stop.IsCancellationRequested) { }
        catch (IOException) { }
        catch (SocketException) { }
        finally
        {
            Leave();
        }
    }

    private async Task RunAsync(LineStream io, int connection, Action quit, CancellationToken ct)
    {
        await io.WriteLineAsync(Greeting, ct);
        if (!Greeting.StartsWith('2')) { await io.ReadLineAsync(ct); return; }
        string? mailFrom = null;
        var rcpts = new List<string>();
        var tls = false;
        while (true)
        {
            var raw = await io.ReadLineAsync(ct);
            if (raw is null) return;
            var line = Encoding.UTF8.GetString(raw);
            Commands.Enqueue(line);
            var verb = line.Split(' ', 2)[0].ToUpperInvariant();
            switch (verb)
            {
                case "EHLO":
                    var caps = new List<string> { "mx.test" };
                    if (Pipelining) caps.Add("PIPELINING");
                    if (Size is { } size) caps.Add($"SIZE {size}");
                    if (EightBitMime) caps.Add("8BITMIME");
                    if (Dsn) caps.Add("DSN");
                    if (SmtpUtf8) caps.Add("SMTPUTF8");
                    if (Certificate is not null && !tls) caps.Add("STARTTLS");
                    for (var i = 0; i < caps.Count; i++)
                        await io.WriteLineAsync($"250{(i == caps.Count - 1 ? ' ' : '-')}{caps[i]}", ct);
                    break;
                case "HELO": await io.WriteLineAsync("250 mx.test", ct); break;
                case "STARTTLS":
                    await io.WriteLineAsync("220 2.0.0 Ready to start TLS", ct);
                    var ssl = new SslStream(io.Inner);
                    await ssl.AuthenticateAsServerAsync(Certificate!, false, false);
                    io = new LineStream(ssl);
                    tls = true;
                    mailFrom = null; rcpts.Clear();
                    break;
                case "MAIL":
                    mailFrom = line;
                    rcpts.Clear();
                    await io.WriteLineAsync(MailReply, ct);
                    break;
                case "RCPT":
                    var address = line[(line.IndexOf('<') + 1)..line.IndexOf('>')];
                    var reply = RcptReply(address);
                    if (reply.StartsWith('2')) rcpts.Add(line);
                    await io.WriteLineAsync(reply, ct);
                    break;
                case "DATA":
                    if (mailFrom is null || rcpts.Count == 0) { await io.WriteLineAsync("554 5.5.1 no valid recipients", ct); break; }
                    await io.WriteLineAsync("354 End data with <CR><LF>.<CR><LF>", ct);
                    var wire = await io.ReadDataAsync(DropAfterDataBytes, ct);
                    if (wire is null) return;   // dropped mid-DATA
                    if (DataDelay > TimeSpan.Zero) await Task.Delay(DataDelay, ct);
                    Messages.Enqueue(new ReceivedMessage(mailFrom, rcpts.ToList(), wire, Unstuff(wire), tls, connection));
                    await io.WriteLineAsync(DataReply, ct);
                    mailFrom = null; rcpts.Clear();
                    break;
                case "RSET": mailFrom = null; rcpts.Clear(); await io.WriteLineAsync("250 2.0.0 Ok", ct); break;
                case "NOOP": await io.WriteLineAsync("250 2.0.0 Ok", ct); break;
                case "QUIT":
                    if (QuitDelay > TimeSpan.Zero) await Task.Delay(QuitDelay, ct);
                    quit();
                    await io.WriteLineAsync("221 2.0.0 Bye", ct);
                    return;
                default: await io.WriteLineAsync("502 5.5.2 Error: command not recognized", ct); break;
            }
        }
    }

    /// <summary>Dot-unstuffs the DATA bytes (RFC 5321 §4.5.2); the final ".\r\n" is already gone.</summary>
    private static byte[] Unstuff(byte[] wire)
    {
        var output = new MemoryStream();
        var bol = true;
        foreach (var b in wire)
        {
            if (bol && b == (byte)'.') { bol = false; continue; }
            output.WriteByte(b);
            bol = b == (byte)'\n';
        }
        return output.ToArray();
    }

    public static X509Certificate2 SelfSignedCertificate(string name = "mx.test")
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pfx), null);
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        try { await _accept; } catch (Exception) { }
        Task[] sessions;
        lock (_sessions) sessions = _sessions.ToArray();
        try { await Task.WhenAll(sessions).WaitAsync(TimeSpan.FromSeconds(5)); } catch (Exception) { }
    }

    /// <summary>Byte-level line reader/writer over a stream.</summary>
    private sealed class LineStream(Stream inner)
    {
        private readonly byte[] _buffer = new byte[8192];
        private int _start, _end;
        public Stream Inner { get; } = inner;

        public async Task WriteLineAsync(string line, CancellationToken ct)
        {
            await Inner.WriteAsync(Encoding.UTF8.GetBytes(line + "\r\n"), ct);
            await Inner.FlushAsync(ct);
        }

        private async Task<bool> FillAsync(CancellationToken ct)
        {
            if (_start > 0) { Array.Copy(_buffer, _start, _buffer, 0, _end - _start); _end -= _start; _start = 0; }
            var read = await Inner.ReadAsync(_buffer.AsMemory(_end), ct);
            _end += read;
            return read > 0;
        }

        /// <summary>One line without its CRLF, or null at end of stream.</summary>
        public async Task<byte[]?> ReadLineAsync(CancellationToken ct)
        {
            while (true)
            {
                var nl = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (nl >= 0)
                {
                    var length = nl - _start;
                    if (length > 0 && _buffer[nl - 1] == '\r') length--;
                    var line = _buffer.AsSpan(_start, length).ToArray();
                    _start = nl + 1;
                    return line;
                }
                if (!await FillAsync(ct)) return null;
            }
        }

        /// <summary>DATA bytes as received up to (not including) the ".\r\n" line; null when dropped or closed.</summary>
        public async Task<byte[]?> ReadDataAsync(int? dropAfter, CancellationToken ct)
        {
            var data = new MemoryStream();
            var midLine = false;
            while (true)
            {
                var nl = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (nl < 0)
                {
                    if (dropAfter is { } limit && data.Length + (_end - _start) >= limit) return null;
                    if (_start == 0 && _end == _buffer.Length)
                    {
                        data.Write(_buffer, 0, _end);   // a line longer than the buffer
                        _start = _end = 0;
                        midLine = true;
                    }
                    if (!await FillAsync(ct)) return null;
                    continue;
                }
                var line = _buffer.AsSpan(_start, nl + 1 - _start);
                _start = nl + 1;
                if (!midLine && line.SequenceEqual(".\r\n"u8)) return data.ToArray();
                midLine = false;
                data.Write(line);
                if (dropAfter is { } max && data.Length >= max) return null;
            }
        }
    }
}
