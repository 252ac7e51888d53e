// RawSmtpClient: a line-level SMTP client for malformed input. Every read has a deadline, so a
// server that hangs fails the test instead of hanging it.
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Relay.Inbound.Tests.Harness;

public sealed partial class RawSmtpClient : IAsyncDisposable
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    private readonly TcpClient _tcp;
    private Stream _stream;
    private readonly List<byte> _pending = [];

    private RawSmtpClient(TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
    }

    public static async Task<RawSmtpClient> ConnectAsync(int port, IPAddress? address = null)
    {
        var tcp = new TcpClient();
        await tcp.ConnectAsync(address ?? IPAddress.Loopback, port);
        return new RawSmtpClient(tcp);
    }

    /// <summary>Reads the greeting, sends EHLO and reads its reply.</summary>
    public static async Task<RawSmtpClient> GreetedAsync(int port, IPAddress? address = null)
    {
        var client = await ConnectAsync(port, address);
        await client.ExpectAsync(220);
        await client.SendAsync("EHLO client.test");
        await client.ExpectAsync(250);
        return client;
    }

    public Task SendAsync(string line) => SendRawAsync(line + "\r\n");

    public Task SendRawAsync(string text) => SendRawAsync(Encoding.UTF8.GetBytes(text));

    public async Task SendRawAsync(byte[] bytes)
    {
        using var cts = new CancellationTokenSource(Deadline);
        await _stream.WriteAsync(bytes, cts.Token);
        await _stream.FlushAsync(cts.Token);
    }

    /// <summary>Reads one (possibly multi-line) reply; returns all its lines.</summary>
    public async Task<List<string>> ReadReplyAsync()
    {
        var lines = new List<string>();
        while (true)
        {
            var line = await ReadLineAsync() ?? throw new IOException($"connection closed; reply so far: {string.Join(" | ", lines)}");
            Assert.Matches(ReplyLine(), line);
            lines.Add(line);
            if (line.Length == 3 || line[3] == ' ')
            {
                return lines;
            }
        }
    }

    /// <summary>Reads one reply and checks its code; returns its last line.</summary>
    public async Task<string> ExpectAsync(int code)
    {
        var reply = await ReadReplyAsync();
        var last = reply[^1];
        Assert.True(last.StartsWith(code.ToString(), StringComparison.Ordinal), $"expected {code}, got: {string.Join(" | ", reply)}");
        return last;
    }

    /// <summary>Reads one reply and checks it is exactly the catalog reply (code and enhanced code).</summary>
    public async Task<string> ExpectAsync(SmtpReply expected)
    {
        var reply = await ReadReplyAsync();
        var last = reply[^1];
        var prefix = expected.Enhanced.Length == 0 ? $"{expected.Code} " : $"{expected.Code} {expected.Enhanced} ";
        Assert.True(last.StartsWith(prefix, StringComparison.Ordinal), $"expected '{expected}', got: {string.Join(" | ", reply)}");
        return last;
    }

    /// <summary>Sends a command and checks the reply in one step.</summary>
    public async Task<string> CommandAsync(string line, int code)
    {
        await SendAsync(line);
        return await ExpectAsync(code);
    }

    public async Task<string> CommandAsync(string line, SmtpReply expected)
    {
        await SendAsync(line);
        return await ExpectAsync(expected);
    }

    /// <summary>True when the server closed the connection (EOF) before the deadline.</summary>
    public async Task<bool> IsClosedAsync()
    {
        try
        {
            return await ReadLineAsync() is null;
        }
        catch (IOException)
        {
            return true;
        }
    }

    public async Task<string?> ReadLineAsync()
    {
        using var cts = new CancellationTokenSource(Deadline);
        var buffer = new byte[4096];
        while (true)
        {
            var lf = _pending.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                var line = _pending.GetRange(0, lf + 1).ToArray();
                _pending.RemoveRange(0, lf + 1);
                Assert.True(line.Length >= 2 && line[^2] == '\r', "server line not terminated by CRLF");
                return Encoding.UTF8.GetString(line, 0, line.Length - 2);
            }

            int n;
            try
            {
                n = await _stream.ReadAsync(buffer, cts.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"no reply within {Deadline}");
            }

            if (n == 0)
            {
                return null;
            }

            _pending.AddRange(buffer.AsSpan(0, n).ToArray());
        }
    }

    public bool HasPendingInput => _pending.Count > 0;

    /// <summary>Wraps the connection in TLS (after a 220 to STARTTLS, or at once for implicit TLS).</summary>
    public async Task UpgradeToTlsAsync()
    {
        var tls = new SslStream(_stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
        using var cts = new CancellationTokenSource(Deadline);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "relay.test" }, cts.Token);
        _stream = tls;
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _tcp.Dispose();
    }

    /// <summary>A valid reply line: code, separator, and an RFC 3463 code unless it is a greeting/EHLO/354/334.</summary>
    [GeneratedRegex(@"^([2-5][0-9][0-9])([ -].*)?$")]
    public static partial Regex ReplyLine();

    [GeneratedRegex(@"^[2-5][0-9][0-9] [245]\.[0-9]{1,3}\.[0-9]{1,3} ")]
    public static partial Regex EnhancedReply();
}
