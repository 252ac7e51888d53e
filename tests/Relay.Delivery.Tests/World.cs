// World: one test's remote side. A DNS responder, SMTP servers on 127.0.0.x that all share one port (the port
// is reserved on 127.0.0.1 for the world's lifetime, so parallel tests never collide), a fake clock and an agent.
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Delivery.Tests;

public sealed class World : IAsyncDisposable
{
    private readonly TcpListener _portHolder = new(IPAddress.Loopback, 0);
    private readonly List<TestSmtpServer> _servers = [];
    private readonly List<DeliveryAgent> _agents = [];
    private int _ids;

    public World()
    {
        _portHolder.Start();
        Port = ((IPEndPoint)_portHolder.LocalEndpoint).Port;
    }

    public int Port { get; }
    public TestDns Dns { get; } = new();
    public FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2026, 11, 23, 9, 0, 0, TimeSpan.Zero));
    public ListLogger Log { get; } = new();

    public TestSmtpServer Server(string ip)
    {
        var server = new TestSmtpServer(IPAddress.Parse(ip), Port);
        _servers.Add(server);
        return server;
    }

    public DeliveryAgent Agent(DeliveryOptions? options = null, Random? random = null)
    {
        var agent = new DeliveryAgent("relay.example.test",
            new ResolverSettings([Dns.EndPoint], TimeSpan.FromSeconds(2)),
            new DeliverySettings(Port, TimeSpan.FromSeconds(5)),
            options ?? new DeliveryOptions { CommandTimeout = TimeSpan.FromSeconds(10) },
            Clock, Log, random);
        _agents.Add(agent);
        return agent;
    }

    public DeliveryRequest Request(string domain, byte[] content, params string[] recipients) =>
        Request(domain, content, e => e, recipients.Select(r => new RecipientEntry { Address = r, Schedule = "default", Queue = "default" }).ToArray());

    public DeliveryRequest Request(string domain, byte[] content, Func<MessageEnvelope, MessageEnvelope> edit, params RecipientEntry[] recipients)
    {
        var envelope = edit(new MessageEnvelope
        {
            Id = $"M{Interlocked.Increment(ref _ids):D4}",
            Sender = "sender@origin.test",
            ArrivedAt = Clock.GetUtcNow(),
            Recipients = recipients,
            Size = content.Length,
        });
        return new DeliveryRequest(envelope.Id, envelope, domain, "default", "default",
            envelope.Recipients.Select((r, i) => new DeliveryRecipient(i, r, 1)).ToArray(),
            _ => ValueTask.FromResult<Stream>(new MemoryStream(content, writable: false)));
    }

    public static byte[] Message(string subject = "hello", string body = "Hi there.\r\n") => Encoding.UTF8.GetBytes(
        "Received: from client.test (client.test [127.0.0.1])\r\n\tby relay.example.test with ESMTP id M0001;\r\n\tMon, 23 Nov 2026 09:00:00 +0000\r\n" +
        "From: <sender@origin.test>\r\nTo: <rcpt@remote.test>\r\n" +
        $"Subject: {subject}\r\nMessage-ID: <{Guid.NewGuid():N}@origin.test>\r\n\r\n{body}");

    public async ValueTask DisposeAsync()
    {
        foreach (var agent in _agents) await agent.DisposeAsync();
        foreach (var server in _servers) await server.DisposeAsync();
        await Dns.DisposeAsync();
        _portHolder.Stop();
    }
}

/// <summary>Collects formatted log lines.</summary>
public sealed class ListLogger : ILogger
{
    public ConcurrentQueue<string> Lines { get; } = new();
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Lines.Enqueue(formatter(state, exception));
}
