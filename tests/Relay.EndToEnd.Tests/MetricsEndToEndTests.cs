using MailKit.Net.Smtp;
using MimeKit;

namespace Relay.EndToEnd.Tests;

/// <summary>The SMTP listener's traffic reaches the host's Prometheus counters.</summary>
public sealed class MetricsEndToEndTests : IAsyncLifetime
{
    private readonly RelayWorld _world = new();

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _world.DisposeAsync();

    [Fact]
    public async Task Sessions_recipients_messages_and_deliveries_are_counted()
    {
        var mx = _world.Remote("127.0.0.2");
        _world.Dns.Mx("remote.test", (10, "mx.remote.test")).Address("mx.remote.test", "127.0.0.2");
        var host = await _world.StartAsync();
        var metrics = host.Metrics;

        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse("app@origin.test"));
        message.To.Add(MailboxAddress.Parse("a@remote.test"));
        message.To.Add(MailboxAddress.Parse("b@remote.test"));
        message.Subject = "counted";
        message.Body = new TextPart("plain") { Text = "hi\r\n" };
        using (var client = new SmtpClient())
        {
            await client.ConnectAsync("127.0.0.1", _world.SmtpPort, MailKit.Security.SecureSocketOptions.None);
            Assert.Equal(1, metrics.InboundSessionsActive.Value);
            await client.SendAsync(message);
            await client.DisconnectAsync(true);
        }

        Assert.Equal(1, metrics.InboundSessions.Value);
        Assert.Equal(2, metrics.InboundRecipients["accepted", "2xx"].Value);
        Assert.Equal(1, metrics.InboundMessages["accepted", "2xx"].Value);
        await RelayWorld.WaitUntil(() => metrics.InboundSessionsActive.Value == 0, TimeSpan.FromSeconds(10), "the session to close");
        await RelayWorld.WaitUntil(() => !mx.Messages.IsEmpty, TimeSpan.FromSeconds(20), "delivery");
        await RelayWorld.WaitUntil(() => metrics.Deliveries["default", "delivered"].Value == 2, TimeSpan.FromSeconds(20),
            "two delivered recipients counted in the default queue");
    }
}
