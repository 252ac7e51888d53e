// TestDns: a DNS responder on a loopback UDP port that answers MX/A/AAAA from a table, NXDOMAIN for names it
// does not know, SERVFAIL or silence where told. Wire format written by hand (RFC 1035 §4).
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Relay.Delivery.Tests;

public sealed class TestDns : IAsyncDisposable
{
    public const ushort A = 1, MX = 15, AAAA = 28;

    private sealed class Name
    {
        public int Rcode;              // 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN
        public bool Silent;
        public uint Ttl = 300;
        public readonly List<(ushort Type, byte[] Data)> Records = [];
    }

    private readonly UdpClient _udp = new(new IPEndPoint(IPAddress.Loopback, 0));
    private readonly ConcurrentDictionary<string, Name> _names = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<(string, ushort), int> _queries = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public TestDns() => _loop = Task.Run(LoopAsync);

    public IPEndPoint EndPoint => (IPEndPoint)_udp.Client.LocalEndPoint!;

    public int Queries(string name, ushort type) => _queries.TryGetValue((name.ToLowerInvariant(), type), out var n) ? n : 0;

    private Name Entry(string name) => _names.GetOrAdd(name.TrimEnd('.'), _ => new Name());

    public TestDns Mx(string domain, params (ushort Preference, string Exchange)[] exchanges)
    {
        var entry = Entry(domain);
        foreach (var (pref, exchange) in exchanges)
        {
            var data = new List<byte> { (byte)(pref >> 8), (byte)pref };
            data.AddRange(EncodeName(exchange));
            entry.Records.Add((MX, data.ToArray()));
        }
        return this;
    }

    public TestDns NullMx(string domain) => Mx(domain, (0, "."));

    public TestDns Address(string name, params string[] addresses)
    {
        var entry = Entry(name);
        foreach (var a in addresses)
        {
            var ip = IPAddress.Parse(a);
            entry.Records.Add((ip.AddressFamily == AddressFamily.InterNetwork ? A : AAAA, ip.GetAddressBytes()));
        }
        return this;
    }

    public TestDns Ttl(string name, uint seconds) { Entry(name).Ttl = seconds; return this; }
    public TestDns ServFail(string name) { Entry(name).Rcode = 2; return this; }
    public TestDns Silent(string name) { Entry(name).Silent = true; return this; }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            UdpReceiveResult packet;
            try { packet = await _udp.ReceiveAsync(_stop.Token); }
            catch (OperationCanceledException) { return; }
            catch (SocketException) { continue; }
            var reply = Answer(packet.Buffer);
            if (reply is not null)
                await _udp.SendAsync(reply, packet.RemoteEndPoint, _stop.Token);
        }
    }

    private byte[]? Answer(byte[] query)
    {
        if (query.Length < 17) return null;
        var labels = new List<string>();
        var at = 12;
        while (query[at] != 0)
        {
            labels.Add(Encoding.ASCII.GetString(query, at + 1, query[at]));
            at += query[at] + 1;
        }
        var questionEnd = at + 5;
        var name = string.Join('.', labels);
        var type = BinaryPrimitives.ReadUInt16BigEndian(query.AsSpan(at + 1));
        _queries.AddOrUpdate((name.ToLowerInvariant(), type), 1, (_, n) => n + 1);

        _names.TryGetValue(name, out var entry);
        if (entry?.Silent == true) return null;
        var rcode = entry is null ? 3 : entry.Rcode;
        var answers = rcode == 0 ? entry!.Records.Where(r => r.Type == type).ToList() : [];

        var reply = new List<byte>();
        reply.AddRange(query.AsSpan(0, 2).ToArray());                              // id
        reply.Add((byte)(0x84 | (query[2] & 0x01)));                               // QR, AA, RD as asked
        reply.Add((byte)(0x80 | rcode));                                           // RA, rcode
        reply.AddRange([0, 1, (byte)(answers.Count >> 8), (byte)answers.Count, 0, 0, 0, 0]);
        reply.AddRange(query.AsSpan(12, questionEnd - 12).ToArray());              // the question, as asked
        foreach (var (rtype, data) in answers)
        {
            reply.AddRange([0xC0, 12, (byte)(rtype >> 8), (byte)rtype, 0, 1]);     // name = pointer to the question
            var ttl = entry!.Ttl;
            reply.AddRange([(byte)(ttl >> 24), (byte)(ttl >> 16), (byte)(ttl >> 8), (byte)ttl]);
            reply.AddRange([(byte)(data.Length >> 8), (byte)data.Length]);
            reply.AddRange(data);
        }
        return reply.ToArray();
    }

    private static byte[] EncodeName(string name)
    {
        var bytes = new List<byte>();
        foreach (var label in name.TrimEnd('.').Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            bytes.Add((byte)label.Length);
            bytes.AddRange(Encoding.ASCII.GetBytes(label));
        }
        bytes.Add(0);
        return bytes.ToArray();
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _udp.Dispose();
        try { await _loop; } catch (Exception) { }
    }
}
