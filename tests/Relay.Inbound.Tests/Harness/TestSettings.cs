// TestSettings: RelaySettings built directly (no TOML), one listener per test server on 127.0.0.1:0.
using System.Net;
using System.Runtime.CompilerServices;
using Relay.Config.Settings;
using Relay.Config.Strategy;

namespace Relay.Inbound.Tests.Harness;

public static class TestSettings
{
    public static readonly ScheduleSettings Default = Schedule("default");
    public static readonly ScheduleSettings Urgent = Schedule("urgent");
    public static readonly ScheduleSettings Bulk = Schedule("bulk");

    public static ScheduleSettings Schedule(string name) =>
        new(name, name + "-q", [TimeSpan.FromMinutes(1)], [], new Expiry.Ttl(TimeSpan.FromDays(1)), null);

    public static ListenerSettings Listener(string name = "smtp", bool tls = false, bool implicitTls = false, bool requireAuth = false, IPAddress? address = null) =>
        new(name, [new IPEndPoint(address ?? IPAddress.Loopback, 0)],
            tls || implicitTls ? new TlsSettings(TestCertificate.PemFiles.Cert, TestCertificate.PemFiles.Key) : null,
            implicitTls, requireAuth);

    public static RelaySettings Create(SessionSettings? session = null, params ListenerSettings[] listeners) => new()
    {
        SourcePath = "test.toml",
        Server = new ServerSettings("relay.test", listeners.Length == 0 ? [Listener()] : listeners),
        Session = session ?? new SessionSettings(),
        Local = new LocalSettings(["local.test"]),
        Spool = new SpoolSettings("spool", TimeSpan.FromDays(1)),
        Resolver = new ResolverSettings([], TimeSpan.FromSeconds(5)),
        Delivery = new DeliverySettings(25, TimeSpan.FromSeconds(30)),
        // The strategy is injected into InboundServer by the tests (TestClassifier), so this
        // instance is never asked; it only fills the record.
        Queue = new QueueSettings(
            (QueueStrategy)RuntimeHelpers.GetUninitializedObject(typeof(QueueStrategy)),
            new Dictionary<string, ScheduleSettings> { ["default"] = Default, ["urgent"] = Urgent, ["bulk"] = Bulk },
            new Dictionary<string, VirtualQueueSettings>()),
        Lists = NamedLists.Empty,
        Admin = new AdminSettings(new IPEndPoint(IPAddress.Loopback, 0), "token"),
        Dsn = new DsnSettings("Mail Delivery System", "postmaster@relay.test"),
    };
}

/// <summary>A stand-in strategy: priority ≥ 6 → urgent, subject "bulk" → bulk, else default. Records what it saw.</summary>
public sealed class TestClassifier
{
    public List<RecipientContext> Seen { get; } = [];

    public StrategyDecision Classify(RecipientContext context)
    {
        lock (Seen)
        {
            Seen.Add(context);
        }

        if (context.Priority >= 6)
        {
            return new StrategyDecision(TestSettings.Urgent, null);
        }

        return context.Subject == "bulk" || context.Headers?.Invoke("X-Kind") == "bulk"
            ? new StrategyDecision(TestSettings.Bulk, null)
            : new StrategyDecision(TestSettings.Default, null);
    }
}

/// <summary>Back-pressure switch for tests.</summary>
public sealed class TestAdmission : IQueueAdmission
{
    public HashSet<string> Full { get; } = [];

    public bool HasRoom(string queueName) => !Full.Contains(queueName);
}
