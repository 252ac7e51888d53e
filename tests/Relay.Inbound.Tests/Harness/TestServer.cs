// TestServer: a real InboundServer on 127.0.0.1:0 with an in-memory spool.
using Relay.Config.Settings;

namespace Relay.Inbound.Tests.Harness;

public sealed class TestServer : IAsyncDisposable
{
    private TestServer(InboundServer server, RelaySettings settings, MemorySpool spool, TestClassifier classifier, TestAdmission admission)
    {
        Server = server;
        Settings = settings;
        Spool = spool;
        Classifier = classifier;
        Admission = admission;
    }

    public InboundServer Server { get; }
    public RelaySettings Settings { get; }
    public MemorySpool Spool { get; }
    public TestClassifier Classifier { get; }
    public TestAdmission Admission { get; }

    public int Port => Server.EndPoints[0].EndPoint.Port;

    public int PortOf(string listener) => Server.EndPoints.First(e => e.Listener == listener).EndPoint.Port;

    public static async Task<TestServer> StartAsync(RelaySettings? settings = null, TimeProvider? clock = null)
    {
        settings ??= TestSettings.Create();
        var spool = new MemorySpool();
        var classifier = new TestClassifier();
        var admission = new TestAdmission();
        var server = new InboundServer(settings, spool, admission: admission, clock: clock, classify: classifier.Classify);
        await server.StartAsync(CancellationToken.None);
        return new TestServer(server, settings, spool, classifier, admission);
    }

    public Task<RawSmtpClient> ConnectAsync(string? listener = null) =>
        RawSmtpClient.ConnectAsync(listener is null ? Port : PortOf(listener));

    public ValueTask DisposeAsync() => Server.DisposeAsync();
}
