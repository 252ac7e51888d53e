// DsnHarness: a real FileSpool on a temp folder, a real config (strategy included), a fake clock, and helpers
// that turn scheduler-shaped reports into DSNs and read them back from the spool with MimeKit.
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using MimeKit;
using Relay.Config;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Dsn.Tests;

public sealed class DsnHarness : IAsyncDisposable
{
    public const string Hostname = "relay.example.test";
    public const string OriginalId = "0197f00000000abc";
    public static readonly DateTimeOffset Arrived = new(2026, 11, 20, 9, 30, 0, TimeSpan.Zero);
    public static readonly DateTimeOffset Now = new(2026, 11, 23, 10, 0, 0, TimeSpan.Zero);

    public const string Config = """
        [server]
        hostname = "relay.example.test"
        [queue.strategy]
        schedule = [ { if = "priority >= 6", then = "'urgent'" },
                     { if = "source == 'dsn' && sender == ''", then = "'bounces'" },
                     { else = "'default'" } ]
        [queue.schedule.urgent]
        queue-name = "urgent"
        retry = ["30s"]
        expire = "1h"
        [queue.schedule.default]
        queue-name = "default"
        retry = ["2m", "5m", "10m"]
        notify = ["1d", "3d"]
        expire = "5d"
        [queue.schedule.bounces]
        queue-name = "dsn-queue"
        retry = ["5m"]
        max-attempts = 3
        [queue.virtual.urgent]
        [queue.virtual.default]
        [queue.virtual.dsn-queue]
        """;

    private readonly string _root = Path.Combine(Path.GetTempPath(), "relay-dsn-tests-" + Guid.NewGuid().ToString("n"));

    public DsnHarness(DsnOptions? options = null, string config = Config)
    {
        var loaded = ConfigLoader.Parse(config);
        Settings = loaded.Settings ?? throw new InvalidOperationException(string.Join("\n", loaded.Errors));
        Clock = new FakeTimeProvider(Now);
        Spool = FileSpool.Open(_root, clock: Clock);
        Sender = new DsnSender(Spool, Settings, Clock, Log, options);
    }

    public RelaySettings Settings { get; }
    public FakeTimeProvider Clock { get; }
    public FileSpool Spool { get; }
    public ListLogger Log { get; } = new();
    public DsnSender Sender { get; }

    public ScheduleSettings DefaultSchedule => Settings.Queue.Schedules["default"];

    /// <summary>An original message as received: CRLF line ends, a body padded to at least <paramref name="bodySize"/> bytes.</summary>
    public static byte[] OriginalMessage(int bodySize = 200, string subject = "Quarterly figures")
    {
        var text = new StringBuilder()
            .Append("Received: from client.example.test by relay.example.test; Fri, 20 Nov 2026 09:30:00 +0000\r\n")
            .Append("From: Alice <alice@example.test>\r\n")
            .Append("To: bob@remote.test\r\n")
            .Append("Subject: ").Append(subject).Append("\r\n")
            .Append("Message-ID: <orig-1@example.test>\r\n")
            .Append("Date: Fri, 20 Nov 2026 09:29:58 +0000\r\n")
            .Append("\r\n")
            .Append("BODY-MARKER first line of the body\r\n");
        while (text.Length < bodySize) text.Append("filler line of the original message body, 0123456789\r\n");
        return Encoding.ASCII.GetBytes(text.ToString());
    }

    public static RecipientEntry Rcpt(string address, DsnNotify notify = DsnNotify.Default, string? orcpt = null) => new()
    {
        Address = address, Notify = notify, OriginalRecipient = orcpt, Schedule = "default", Queue = "default",
    };

    public static MessageEnvelope Envelope(IReadOnlyList<RecipientEntry> recipients, string sender = "alice@example.test",
        DsnReturn ret = DsnReturn.Unspecified, string? envid = null, long size = 200, string source = "smtp") => new()
    {
        Id = OriginalId, Sender = sender, ArrivedAt = Arrived, Recipients = recipients, Return = ret, EnvelopeId = envid,
        Size = size, Source = source,
    };

    public static DeliveryReport Report(MessageEnvelope envelope, byte[] content, params ReportedRecipient[] recipients) =>
        new(envelope.Id, envelope, recipients, _ => ValueTask.FromResult<Stream>(new MemoryStream(content, writable: false)));

    public static ReportedRecipient Final(MessageEnvelope envelope, int index, RecipientStatus status, DeliveryError? error, int attempts = 1) =>
        new(index, envelope.Recipients[index], status, error, attempts, null, null);

    /// <summary>Every DSN committed so far: its envelope, raw bytes and the message MimeKit parses from them.</summary>
    public async Task<IReadOnlyList<QueuedDsn>> CommittedAsync()
    {
        var result = new List<QueuedDsn>();
        foreach (var m in Spool.TakeCommitted(1000))
        {
            var envelope = await Spool.ReadEnvelopeAsync(m.Id, CancellationToken.None);
            await using var content = await Spool.OpenContentAsync(m.Id, CancellationToken.None);
            var bytes = new MemoryStream();
            await content.CopyToAsync(bytes);
            bytes.Position = 0;
            result.Add(new QueuedDsn(envelope, bytes.ToArray(), await MimeMessage.LoadAsync(bytes)));
        }
        return result;
    }

    public async Task<QueuedDsn> SingleAsync()
    {
        var all = await CommittedAsync();
        return Assert.Single(all);
    }

    public async ValueTask DisposeAsync()
    {
        await Spool.DisposeAsync();
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }
}

public sealed record QueuedDsn(MessageEnvelope Envelope, byte[] Bytes, MimeMessage Message)
{
    public MultipartReport Report => Assert.IsType<MultipartReport>(Message.Body);
    public TextPart Human => Assert.IsType<TextPart>(Report[0]);
    public MessageDeliveryStatus Status => Assert.IsType<MessageDeliveryStatus>(Report[1]);
    // MimeKit writes a blank line after every group (as Postfix does) and parses the trailing one back as an empty group.
    public IReadOnlyList<HeaderList> Groups => Status.StatusGroups.Where(g => g.Count > 0).ToList();
    public HeaderList PerMessage => Groups[0];
    public HeaderList Recipient(int i) => Groups[i + 1];
    public int RecipientGroups => Groups.Count - 1;
}

/// <summary>Captures log lines (the DSN stage logs one line per DSN sent).</summary>
public sealed class ListLogger : ILogger
{
    private readonly List<(EventId Id, LogLevel Level, string Text)> _lines = [];

    public IReadOnlyList<(EventId Id, LogLevel Level, string Text)> Lines { get { lock (_lines) return [.. _lines]; } }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_lines) _lines.Add((eventId, logLevel, formatter(state, exception)));
    }
}
