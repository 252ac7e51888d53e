// DsnSender: the DSN stage. The scheduler reports final and delayed recipients; this applies RFC 3461
// (NOTIFY, RET, never about a message from <>), builds each DSN and queues it in the spool as a new message
// from <> with source "dsn", on the schedule the strategy picks (Postfix bounce(8), Stalwart queue/dsn.rs).
using Microsoft.Extensions.Logging;
using MimeKit;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Dsn;

public sealed class DsnSender : IDeliveryReports
{
    /// <summary>Source of DSN messages, as the strategy sees it (<c>source == 'dsn'</c>).</summary>
    public const string Source = "dsn";

    private static readonly FormatOptions Wire = CreateWireFormat();

    private readonly IMessageSpool _spool;
    private readonly LiveStrategy _strategy;   // shared with the other stages: a reload swaps it for all
    private readonly DsnBuilder _builder;
    private readonly TimeProvider _clock;
    private readonly ILogger _log;
    private readonly ReportMemory _sent;

    /// <summary>The host's constructor: hostname, <c>[dsn]</c> and the strategy come from <paramref name="settings"/>.</summary>
    public DsnSender(IMessageSpool spool, RelaySettings settings, TimeProvider clock, ILogger logger, DsnOptions? options = null)
        : this(spool, settings.Server.Hostname, settings.Dsn, settings.Queue, clock, logger, options)
    {
    }

    /// <summary>The host's constructor with the process-wide strategy holder, so a config reload reaches DSNs too.</summary>
    public DsnSender(IMessageSpool spool, RelaySettings settings, LiveStrategy strategy, TimeProvider clock, ILogger logger, DsnOptions? options = null)
        : this(spool, settings.Server.Hostname, settings.Dsn, strategy, clock, logger, options)
    {
    }

    public DsnSender(IMessageSpool spool, string hostname, DsnSettings dsn, QueueSettings queue, TimeProvider clock,
                     ILogger logger, DsnOptions? options = null)
        : this(spool, hostname, dsn, new LiveStrategy(queue), clock, logger, options)
    {
    }

    public DsnSender(IMessageSpool spool, string hostname, DsnSettings dsn, LiveStrategy strategy, TimeProvider clock,
                     ILogger logger, DsnOptions? options = null)
    {
        options ??= new DsnOptions();
        _spool = spool;
        _strategy = strategy;
        _builder = new DsnBuilder(hostname, dsn, options);
        _clock = clock;
        _log = logger;
        _sent = new ReportMemory(options.RememberedReports);
    }

    public async ValueTask RecipientsFinalAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        if (report.Envelope.Sender.Length == 0)
        {
            LogNullSender(report);
            return;
        }
        // A report repeated after a partial failure (one of two DSNs queued, then an error) skips what went out.
        var fresh = report with { Recipients = report.Recipients.Where(r => !_sent.Contains(report.MessageId, r.Index)).ToList() };
        foreach (var request in DsnPlanner.ForFinal(fresh, _clock.GetUtcNow()))
        {
            await SendAsync(request, report.OpenContent, cancellationToken);
            foreach (var r in request.Recipients) _sent.Add(report.MessageId, r.Index);
        }
    }

    public async ValueTask DelayedAsync(DeliveryReport report, CancellationToken cancellationToken)
    {
        // One report → at most one DSN, so a throw leaves nothing half-sent for the scheduler's retry.
        if (DsnPlanner.ForDelay(report, _clock.GetUtcNow(), _strategy.Schedules) is { } request)
            await SendAsync(request, report.OpenContent, cancellationToken);
    }

    /// <summary>Builds the DSN and commits it to the spool; returns its queue id.</summary>
    /// <exception cref="SpoolWriteException">Not queued; the scheduler reports again later.</exception>
    public async Task<string> SendAsync(DsnRequest request, Func<CancellationToken, ValueTask<Stream>> openOriginal,
                                        CancellationToken cancellationToken)
    {
        await using var incoming = _spool.Begin();
        var original = await OpenOriginalAsync(request, openOriginal, cancellationToken);
        MimeMessage dsn;
        await using (original)
        {
            dsn = await _builder.BuildAsync(request, incoming.Id, original, cancellationToken);
        }
        var returned = original is null ? DsnReturned.None : _builder.ReturnFor(request);
        try
        {
            await using (var sink = new SpoolWriteStream(incoming))
                await dsn.WriteToAsync(Wire, sink, cancellationToken);

            var sender = request.Original.Sender;
            var decision = _strategy.Classify(new RecipientContext
            {
                Recipient = sender,
                Sender = "",
                Source = Source,
                Priority = 0,   // DSNs are routed by source, not by the original's priority (DESIGN.md strategy example)
                Size = incoming.Length,
                Subject = dsn.Subject ?? "",
                Headers = name => dsn.Headers[name],
            });
            if (decision.Error is { } error) _log.StrategyFailed(request.MessageId, error.Message);

            await incoming.CommitAsync(new MessageEnvelope
            {
                Id = incoming.Id,
                Sender = "",
                ArrivedAt = _clock.GetUtcNow(),
                Recipients =
                [
                    new RecipientEntry
                    {
                        Address = sender,
                        Notify = DsnNotify.Never,   // a DSN never asks for DSNs (it comes from <> anyway)
                        Schedule = decision.Schedule.Name,
                        Queue = decision.Schedule.QueueName,
                    },
                ],
                Priority = 0,
                Source = Source,
                Body = returned != DsnReturned.None && request.Original.Body == BodyType.EightBitMime ? BodyType.EightBitMime : BodyType.Unspecified,
                SmtpUtf8 = request.Original.SmtpUtf8 || !sender.All(char.IsAscii),
            }, cancellationToken);

            _log.Sent(request.MessageId, KindName(request.Kind), incoming.Id, sender,
                      string.Join(",", request.Recipients.Select(r => r.Address)), returned.ToString().ToLowerInvariant(),
                      decision.Schedule.Name, decision.Schedule.QueueName);
            return incoming.Id;
        }
        catch (Exception e) when (e is SpoolWriteException)
        {
            _log.QueueFailed(request.MessageId, KindName(request.Kind), e.Message);
            throw;
        }
    }

    private async Task<Stream?> OpenOriginalAsync(DsnRequest request, Func<CancellationToken, ValueTask<Stream>> open,
                                                  CancellationToken cancellationToken)
    {
        try
        {
            return await open(cancellationToken);
        }
        catch (IOException e)   // includes SpoolCorruptException: the spool has quarantined it; the sender still learns the outcome
        {
            _log.OriginalUnreadable(request.MessageId, e.Message);
            return null;
        }
    }

    private void LogNullSender(DeliveryReport report)
    {
        foreach (var r in report.Recipients)
        {
            if (r.Status is RecipientStatus.Failed or RecipientStatus.Expired)
                _log.NullSenderDropped(report.MessageId, r.Entry.Address, r.LastError?.EnhancedStatus ?? "5.0.0",
                                       report.Envelope.Source, DsnPlanner.OneLine(r.LastError?.Text));
        }
    }

    private static string KindName(DsnKind kind) => kind switch
    {
        DsnKind.Failure => "failure",
        DsnKind.Delay => "delay",
        _ => "success",
    };

    private static FormatOptions CreateWireFormat()
    {
        var options = FormatOptions.Default.Clone();
        options.NewLineFormat = NewLineFormat.Dos;   // the spool holds what goes on the wire: CRLF line ends
        return options;
    }

    /// <summary>Bounded memory of (message, recipient) final reports already turned into DSNs.</summary>
    private sealed class ReportMemory(int capacity)
    {
        private readonly HashSet<(string, int)> _set = [];
        private readonly Queue<(string, int)> _order = new();

        public bool Contains(string id, int index)
        {
            lock (_set) return _set.Contains((id, index));
        }

        public void Add(string id, int index)
        {
            lock (_set)
            {
                if (capacity <= 0 || !_set.Add((id, index))) return;
                _order.Enqueue((id, index));
                while (_order.Count > capacity) _set.Remove(_order.Dequeue());
            }
        }
    }
}
