// SmtpConnectionHandler: Kestrel's entry point for one listener. A singleton per listener: all
// per-connection state lives in the SmtpSession it creates (STYLE.md §5.2).
using System.Net;
using Microsoft.AspNetCore.Connections;
using Relay.Inbound.Session;

namespace Relay.Inbound;

internal sealed class SmtpConnectionHandler(InboundRuntime runtime, ListenerRuntime listener) : ConnectionHandler
{
    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        if (!runtime.TryEnter())
        {
            // Kestrel's own limit closes silently; an SMTP client expects a reply (RFC 5321 §3.1).
            var remote = (connection.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
            runtime.Logger.TooManyConnections(remote, runtime.Settings.Session.MaxConnections);
            await RefuseAsync(connection);
            return;
        }

        runtime.Events.SessionOpened();
        try
        {
            await using var session = new SmtpSession(runtime, listener, connection);
            await session.RunAsync();
        }
        finally
        {
            runtime.Events.SessionClosed();
            runtime.Leave();
        }
    }

    private async Task RefuseAsync(ConnectionContext connection)
    {
        try
        {
            var reply = SmtpReplies.TooManyConnections(runtime.Settings.Server.Hostname);
            await connection.Transport.Output.WriteAsync(System.Text.Encoding.ASCII.GetBytes(reply + "\r\n"), connection.ConnectionClosed);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ConnectionResetException)
        {
        }
    }
}
