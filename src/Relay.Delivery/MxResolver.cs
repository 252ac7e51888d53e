// MxResolver: where mail for a domain goes (RFC 5321 §5.1). MX records by preference (equal ones shuffled),
// A then AAAA per exchange, implicit MX, null MX (RFC 7505), address literals; answers cached for their TTL.
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using DnsClient;
using DnsClient.Protocol;
using Relay.Config.Settings;

namespace Relay.Delivery;

/// <summary>One host to try, with its addresses in the order to try them.</summary>
internal sealed record MxHost(string Name, int Preference, IReadOnlyList<IPAddress> Addresses);

/// <summary>Either the hosts to try, in order, or a failure for the whole domain.</summary>
internal sealed record MxResolution(IReadOnlyList<MxHost> Hosts, Failure? Error)
{
    public static MxResolution Failed(Failure error) => new([], error);
}

internal sealed class MxResolver
{
    private enum Status { Ok, NxDomain, NoData, Failed }

    private sealed record Answer(Status Status, IReadOnlyList<DnsResourceRecord> Records, string? Error, DateTimeOffset Expires);

    private readonly LookupClient _dns;
    private readonly TimeProvider _clock;
    private readonly DeliveryOptions _options;
    private readonly Random _random;
    private readonly ConcurrentDictionary<(string Name, QueryType Type), Answer> _cache = new();

    public MxResolver(ResolverSettings settings, DeliveryOptions options, TimeProvider clock, Random? random = null)
    {
        // Empty nameservers = the system resolver (production only; every test names a loopback responder).
        var lookup = settings.Nameservers.Count == 0
            ? new LookupClientOptions()
            : new LookupClientOptions(settings.Nameservers.ToArray());
        lookup.Timeout = settings.Timeout;
        lookup.Retries = 1;
        lookup.UseCache = false;          // we cache ourselves, against the injected clock
        lookup.ThrowDnsErrors = false;
        lookup.ContinueOnDnsError = true;
        lookup.ContinueOnEmptyResponse = false;
        lookup.UseTcpFallback = true;
        _dns = new LookupClient(lookup);
        _clock = clock;
        _options = options;
        _random = random ?? Random.Shared;
    }

    /// <summary>Number of queries actually sent (cache misses); for tests and metrics.</summary>
    public int QueriesSent => _queries;
    private int _queries;

    public async Task<MxResolution> ResolveAsync(string domain, CancellationToken cancellationToken)
    {
        if (TryParseLiteral(domain, out var literal))
            return new MxResolution([new MxHost(domain, 0, [literal])], null);

        var mx = await QueryAsync(domain, QueryType.MX, cancellationToken);
        switch (mx.Status)
        {
            case Status.NxDomain:
                return MxResolution.Failed(OutcomeClassifier.NoSuchDomain(domain));
            case Status.Failed:
                return MxResolution.Failed(OutcomeClassifier.DnsTemporary(domain, $"MX: {mx.Error}"));
            case Status.NoData:
                return await ImplicitMxAsync(domain, cancellationToken);
        }

        var records = mx.Records.OfType<MxRecord>().ToList();
        if (records.Count == 0)
            return await ImplicitMxAsync(domain, cancellationToken);
        if (records.Any(r => IsRoot(r.Exchange.Value)))
            return MxResolution.Failed(OutcomeClassifier.NullMx(domain));

        var hosts = new List<MxHost>();
        Failure? lastError = null;
        foreach (var record in OrderByPreference(records))
        {
            var name = record.Exchange.Value.TrimEnd('.');
            var (addresses, error) = await AddressesAsync(name, cancellationToken);
            if (error is not null) lastError = error;
            if (addresses.Count > 0) hosts.Add(new MxHost(name, record.Preference, addresses));
        }
        if (hosts.Count > 0) return new MxResolution(hosts, null);
        return MxResolution.Failed(lastError is { Kind: Scheduler.OutcomeKind.Temporary }
            ? lastError
            : OutcomeClassifier.DnsTemporary(domain, "no MX host has an address"));
    }

    /// <summary>One named host (a smart host): its A/AAAA, or an address literal / bare IP as is.</summary>
    public async Task<MxResolution> ResolveHostAsync(string name, CancellationToken cancellationToken)
    {
        if (TryParseLiteral(name, out var literal) || IPAddress.TryParse(name, out literal!))
            return new MxResolution([new MxHost(name, 0, [literal])], null);
        var (addresses, error) = await AddressesAsync(name, cancellationToken);
        if (addresses.Count > 0) return new MxResolution([new MxHost(name, 0, addresses)], null);
        return MxResolution.Failed(error is { Kind: Scheduler.OutcomeKind.Temporary } ? error
            : OutcomeClassifier.DnsTemporary(name, "smart host has no address"));   // a config problem: defer, never bounce
    }

    private async Task<MxResolution> ImplicitMxAsync(string domain, CancellationToken cancellationToken)
    {
        var (addresses, error) = await AddressesAsync(domain, cancellationToken);
        if (addresses.Count > 0) return new MxResolution([new MxHost(domain, 0, addresses)], null);
        return MxResolution.Failed(error is { Kind: Scheduler.OutcomeKind.Temporary } ? error : OutcomeClassifier.NoAddresses(domain));
    }

    /// <summary>A then AAAA. An error is returned only when no address was found.</summary>
    private async Task<(IReadOnlyList<IPAddress>, Failure?)> AddressesAsync(string name, CancellationToken cancellationToken)
    {
        var addresses = new List<IPAddress>();
        Failure? error = null;
        foreach (var type in new[] { QueryType.A, QueryType.AAAA })
        {
            var answer = await QueryAsync(name, type, cancellationToken);
            if (answer.Status == Status.Ok)
                addresses.AddRange(answer.Records.Select(r => r switch
                {
                    ARecord a => a.Address,
                    AaaaRecord aaaa => aaaa.Address,
                    _ => null,
                }).OfType<IPAddress>());
            else if (answer.Status == Status.Failed)
                error = OutcomeClassifier.DnsTemporary(name, $"{type}: {answer.Error}");
            else
                error ??= OutcomeClassifier.NoAddresses(name);
        }
        return addresses.Count > 0 ? (addresses, null) : (addresses, error);
    }

    private IEnumerable<MxRecord> OrderByPreference(List<MxRecord> records)
    {
        foreach (var group in records.GroupBy(r => r.Preference).OrderBy(g => g.Key))
        {
            var same = group.ToArray();
            _random.Shuffle(same);
            foreach (var record in same) yield return record;
        }
    }

    private async Task<Answer> QueryAsync(string name, QueryType type, CancellationToken cancellationToken)
    {
        var key = (name.ToLowerInvariant(), type);
        var now = _clock.GetUtcNow();
        if (_cache.TryGetValue(key, out var cached) && cached.Expires > now)
            return cached;

        Interlocked.Increment(ref _queries);
        Answer answer;
        try
        {
            var response = await _dns.QueryAsync(name, type, QueryClass.IN, cancellationToken);
            answer = Interpret(response, type, now);
        }
        catch (DnsResponseException e)
        {
            answer = new Answer(Status.Failed, [], e.Code == DnsResponseCode.ConnectionTimeout ? "timeout" : e.Message, now);
        }
        catch (SocketException e)
        {
            answer = new Answer(Status.Failed, [], e.SocketErrorCode.ToString(), now);
        }
        if (answer.Status != Status.Failed) _cache[key] = answer;   // failures are never cached
        return answer;
    }

    private Answer Interpret(IDnsQueryResponse response, QueryType type, DateTimeOffset now)
    {
        var code = response.Header.ResponseCode;
        if (code == DnsHeaderResponseCode.NotExistentDomain)
            return new Answer(Status.NxDomain, [], "NXDOMAIN", now + NegativeTtl(response));
        if (code != DnsHeaderResponseCode.NoError)
            return new Answer(Status.Failed, [], code == DnsHeaderResponseCode.ServerFailure ? "SERVFAIL" : code.ToString(), now);

        var records = response.Answers.Where(r => r.RecordType == (ResourceRecordType)type).ToList();
        if (records.Count == 0)
            return new Answer(Status.NoData, [], "no data", now + NegativeTtl(response));
        var ttl = TimeSpan.FromSeconds(records.Min(r => r.InitialTimeToLive));
        return new Answer(Status.Ok, records, null, now + Min(ttl, _options.DnsCacheMaxTtl));
    }

    private TimeSpan NegativeTtl(IDnsQueryResponse response)
    {
        var soa = response.Authorities.OfType<SoaRecord>().FirstOrDefault();
        var ttl = soa is null ? _options.DnsNegativeTtl : TimeSpan.FromSeconds(Math.Min(soa.Minimum, (uint)soa.InitialTimeToLive));
        return Min(ttl, _options.DnsCacheMaxTtl);
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static bool IsRoot(string exchange) => exchange is "." or "";

    /// <summary><c>[192.0.2.1]</c> or <c>[IPv6:2001:db8::1]</c> (RFC 5321 §4.1.3).</summary>
    internal static bool TryParseLiteral(string domain, out IPAddress address)
    {
        address = IPAddress.None;
        if (domain.Length < 3 || domain[0] != '[' || domain[^1] != ']') return false;
        var inner = domain[1..^1];
        if (inner.StartsWith("IPv6:", StringComparison.OrdinalIgnoreCase))
            return IPAddress.TryParse(inner[5..], out address!) && address.AddressFamily == AddressFamily.InterNetworkV6;
        return IPAddress.TryParse(inner, out address!) && address.AddressFamily == AddressFamily.InterNetwork;
    }
}
