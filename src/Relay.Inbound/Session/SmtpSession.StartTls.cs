// STARTTLS (RFC 3207): answer 220, drop anything the client pipelined after the command (the
// CVE-2011-0411 class of bug), run the handshake, swap the transport and forget the session state.
using System.IO.Pipelines;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Inbound.Session;

internal sealed partial class SmtpSession
{
    private async ValueTask<SmtpReply?> HandleStartTlsAsync(string argument)
    {
        if (_listener.Certificate is not { } certificate)
        {
            return SmtpReplies.NotImplemented;
        }

        if (Tls is not null)
        {
            return SmtpReplies.AlreadyTls;
        }

        if (argument.Length > 0)
        {
            return SmtpReplies.SyntaxError;
        }

        if (_transaction is not null)
        {
            return SmtpReplies.NestedMail;
        }

        Write(SmtpReplies.ReadyToStartTls);
        await FlushAsync(_dataCts.Token);
        if (_buffered && _input.TryRead(out var pending))
        {
            _runtime.Logger.StartTlsPipelined(_remoteIp, pending.Buffer.Length);
            _input.AdvanceTo(pending.Buffer.End);
        }

        _buffered = false;
        var tls = new SslStream(new DuplexPipeStream(_input, _output), leaveInnerStreamOpen: false);
        try
        {
            _idle.CancelAfter(Limits.Timeout);
            await tls.AuthenticateAsServerAsync(ServerOptions(certificate), _dataCts.Token);
        }
        catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException)
        {
            _runtime.Logger.TlsFailed(_remoteIp, e.Message);
            await tls.DisposeAsync();
            _closing = true;
            return null; // no reply: the client is not speaking SMTP on this stream any more
        }

        _startTls = tls;
        _input = PipeReader.Create(tls, new StreamPipeReaderOptions(leaveOpen: true));
        _output = PipeWriter.Create(tls, new StreamPipeWriterOptions(leaveOpen: true));
        _state = SessionState.Connected; // RFC 3207 §4.2: EHLO again, nothing from before counts
        _helo = null;
        _esmtp = false;
        _authenticatedAs = null;
        return null;
    }

    internal static SslServerAuthenticationOptions ServerOptions(X509Certificate2 certificate) => new()
    {
        ServerCertificate = certificate,
        ClientCertificateRequired = false,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
    };
}
