// SmtpSession: one SMTP connection. The loop reads a line, parses it, checks the sequence, runs the
// verb's handler (one partial file per verb group, as Stalwart's inbound/ does) and queues the reply.
// Replies are flushed only when no more input is buffered, which is what PIPELINING (RFC 2920) asks.
using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Relay.Config.Settings;
using Relay.Inbound.Protocol;

namespace Relay.Inbound.Session;

internal sealed partial class SmtpSession : IAsyncDisposable
{
    private enum SessionState { Connected, Greeted }

    private readonly InboundRuntime _runtime;
    private readonly ListenerRuntime _listener;
    private readonly ConnectionContext _connection;
    private readonly IPAddress _remoteIp;
    private readonly bool _isLoopback;
    private readonly SslStream? _implicitTls;
    private readonly CancellationTokenSource _idle;
    private readonly CancellationTokenSource _commandCts; // idle, connection closed, server stopping
    private readonly CancellationTokenSource _dataCts;    // idle, connection closed: a message in flight is finished
    private PipeReader _input;
    private PipeWriter _output;
    private SslStream? _startTls;
    private bool _buffered;
    private bool _closing;
    private SessionState _state;
    private string? _helo;
    private bool _esmtp;
    private string? _authenticatedAs;
    private string? _reverseName;
    private int _errors;
    private int _commands;
    private Transaction? _transaction;

    public SmtpSession(InboundRuntime runtime, ListenerRuntime listener, ConnectionContext connection)
    {
        _runtime = runtime;
        _config = runtime.Settings;   // a reload applies to sessions that start after it
        _listener = listener;
        _connection = connection;
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        var remote = (connection.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
        _remoteIp = remote.IsIPv4MappedToIPv6 ? remote.MapToIPv4() : remote;
        _isLoopback = runtime.LoopbackIsLocal && IPAddress.IsLoopback(_remoteIp);
        _implicitTls = connection.Features.Get<ISslStreamFeature>()?.SslStream;
        _idle = new CancellationTokenSource(Timeout.InfiniteTimeSpan, runtime.Clock);
        _commandCts = CancellationTokenSource.CreateLinkedTokenSource(_idle.Token, connection.ConnectionClosed, runtime.Stopping);
        _dataCts = CancellationTokenSource.CreateLinkedTokenSource(_idle.Token, connection.ConnectionClosed);
    }

    private readonly RelaySettings _config;

    private SessionSettings Limits => _config.Session;

    private string Hostname => _config.Server.Hostname;

    private SslStream? Tls => _startTls ?? _implicitTls;

    private bool IsAuthenticated => _authenticatedAs is not null;

    public async Task RunAsync()
    {
        _runtime.Logger.Connected(_remoteIp, _listener.Settings.Name);
        try
        {
            if (Limits.ReverseDns)
            {
                _reverseName = await LookUpReverseNameAsync();
            }

            Write(SmtpReplies.Greeting(Hostname));
            while (!_closing)
            {
                var (status, line) = await ReadLineAsync(SmtpLineReader.MaxCommandLine, _commandCts.Token);
                if (status is null)
                {
                    break; // the client closed the connection
                }

                _commands++;
                var reply = status switch
                {
                    LineStatus.TooLong => SmtpReplies.LineTooLong,
                    LineStatus.BareLineFeed => SmtpReplies.BareLineEndingInCommand,
                    _ => await HandleLineAsync(line!),
                };
                if (reply is { } r)
                {
                    Reply(r);
                }
            }
        }
        catch (OperationCanceledException) when (_idle.IsCancellationRequested)
        {
            _runtime.Logger.IdleTimeout(_remoteIp, Limits.Timeout);
            TryWrite(SmtpReplies.IdleTimeout(Hostname));
        }
        catch (OperationCanceledException) when (_runtime.Stopping.IsCancellationRequested && !_connection.ConnectionClosed.IsCancellationRequested)
        {
            TryWrite(SmtpReplies.ShuttingDown(Hostname));
        }
        catch (Exception e) when (IsDisconnect(e))
        {
            // The client went away (or Kestrel aborted the connection at shutdown).
        }
        catch (Exception e)
        {
            _runtime.Logger.SessionFailed(_remoteIp, e);
            TryWrite(SmtpReplies.LocalError);
        }
        finally
        {
            await ResetTransactionAsync();
            await TryFlushAsync();
            _runtime.Logger.Disconnected(_remoteIp, _commands, _errors);
        }
    }

    private static bool IsDisconnect(Exception e) =>
        e is IOException or ConnectionResetException or ConnectionAbortedException or OperationCanceledException
            or ObjectDisposedException or AuthenticationException or InvalidOperationException { Source: "System.IO.Pipelines" };

    private async ValueTask<SmtpReply?> HandleLineAsync(byte[] line)
    {
        if (SmtpCommandParser.Parse(line) is not { } command)
        {
            return SmtpReplies.NulInCommand;
        }

        return command.Verb switch
        {
            SmtpVerb.Helo => await HandleHeloAsync(command.Argument, extended: false),
            SmtpVerb.Ehlo => await HandleHeloAsync(command.Argument, extended: true),
            SmtpVerb.Mail => HandleMail(command.Argument),
            SmtpVerb.Rcpt => AnsweredRcpt(HandleRcpt(command.Argument)),
            SmtpVerb.Data => await HandleDataAsync(command.Argument),
            SmtpVerb.Bdat => await HandleBdatAsync(command.Argument),
            SmtpVerb.Rset => await HandleRsetAsync(command.Argument),
            SmtpVerb.Noop => SmtpReplies.Ok,
            SmtpVerb.Quit => HandleQuit(),
            SmtpVerb.Vrfy => command.Argument.Length == 0 ? SmtpReplies.SyntaxError : SmtpReplies.Vrfy,
            SmtpVerb.Expn => SmtpReplies.NotImplemented,
            SmtpVerb.Help => SmtpReplies.Help,
            SmtpVerb.StartTls => await HandleStartTlsAsync(command.Argument),
            SmtpVerb.Auth => await HandleAuthAsync(command.Argument),
            _ => SmtpReplies.UnknownCommand,
        };
    }

    private SmtpReply AnsweredRcpt(SmtpReply reply)
    {
        _runtime.Events.RecipientAnswered(reply.Code);
        return reply;
    }

    private async ValueTask<SmtpReply?> HandleRsetAsync(string argument)
    {
        if (argument.Length > 0)
        {
            return SmtpReplies.SyntaxError;
        }

        await ResetTransactionAsync();
        return SmtpReplies.ResetOk;
    }

    private SmtpReply HandleQuit()
    {
        _closing = true;
        return SmtpReplies.Bye(Hostname);
    }

    // ---- replies --------------------------------------------------------------------------

    /// <summary>Queues a reply; counts errors and turns the one over the limit into 421 and a close.</summary>
    private void Reply(SmtpReply reply)
    {
        if (reply.Code >= 500 && ++_errors > Limits.MaxErrors)
        {
            _runtime.Logger.TooManyErrors(_remoteIp);
            reply = SmtpReplies.TooManyErrors(Hostname);
        }

        if (reply.Code is 221 or 421)
        {
            _closing = true;
        }

        Write(reply);
    }

    private void Write(SmtpReply reply) => WriteLine(reply.ToString());

    private void WriteLine(string line)
    {
        var count = Encoding.UTF8.GetByteCount(line) + 2;
        var span = _output.GetSpan(count);
        var n = Encoding.UTF8.GetBytes(line, span);
        span[n] = (byte)'\r';
        span[n + 1] = (byte)'\n';
        _output.Advance(count);
    }

    private async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        _idle.CancelAfter(Limits.Timeout);
        await _output.FlushAsync(cancellationToken);
    }

    private void TryWrite(SmtpReply reply)
    {
        try
        {
            Write(reply);
        }
        catch (Exception e) when (IsDisconnect(e))
        {
        }
    }

    private async ValueTask TryFlushAsync()
    {
        try
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5), _runtime.Clock);
            await _output.FlushAsync(deadline.Token);
        }
        catch (Exception e) when (IsDisconnect(e))
        {
        }
    }

    // ---- input ----------------------------------------------------------------------------

    /// <summary>Reads from the current transport. Flushes pending replies first when nothing is buffered.</summary>
    private async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken)
    {
        if (!_buffered)
        {
            await FlushAsync(cancellationToken);
        }

        _idle.CancelAfter(Limits.Timeout);
        return await _input.ReadAsync(cancellationToken);
    }

    /// <summary>Reads one line; a null status means the client closed the connection.</summary>
    private async ValueTask<(LineStatus? Status, byte[]? Line)> ReadLineAsync(int maxLength, CancellationToken cancellationToken)
    {
        var discarding = false;
        while (true)
        {
            var result = await ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            if (discarding)
            {
                var found = SmtpLineReader.TrySkipLine(ref buffer);
                _buffered = found && !buffer.IsEmpty;   // before AdvanceTo: the buffer is the pipe's until then
                _input.AdvanceTo(buffer.Start);
                if (found)
                {
                    return (LineStatus.TooLong, null);
                }
            }
            else
            {
                var limit = maxLength == SmtpLineReader.MaxCommandLine && SmtpLineReader.StartsWithAuth(buffer)
                    ? SmtpLineReader.MaxAuthLine
                    : maxLength;
                var status = SmtpLineReader.TryReadLine(ref buffer, limit, out var line);
                switch (status)
                {
                    case LineStatus.Line or LineStatus.BareLineFeed:
                        var bytes = line.ToArray();
                        _buffered = !buffer.IsEmpty;
                        _input.AdvanceTo(buffer.Start);
                        return (status, bytes);
                    case LineStatus.TooLong:
                        // Drop the window; the rest of the buffer may already hold the line's end.
                        discarding = true;
                        _buffered = buffer.Length > limit;
                        _input.AdvanceTo(buffer.GetPosition(limit));
                        break;
                    default:
                        _input.AdvanceTo(buffer.Start, buffer.End);
                        _buffered = false;
                        break;
                }
            }

            if (result.IsCompleted || result.IsCanceled)
            {
                return (null, null);
            }
        }
    }

    private async ValueTask<string?> LookUpReverseNameAsync()
    {
        try
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5), _runtime.Clock);
            var entry = await Dns.GetHostEntryAsync(_remoteIp.ToString(), deadline.Token);
            return entry.HostName;
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException or ArgumentException)
        {
            return null;
        }
    }

    /// <summary>Ends the transaction; a message not yet committed is discarded by the spool.</summary>
    private async ValueTask ResetTransactionAsync()
    {
        var transaction = _transaction;
        _transaction = null;
        if (transaction?.Message is { } message)
        {
            transaction.Message = null;
            await message.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await ResetTransactionAsync();
        if (_startTls is not null)
        {
            await _input.CompleteAsync();
            await _output.CompleteAsync();
            await _startTls.DisposeAsync();
        }

        _commandCts.Dispose();
        _dataCts.Dispose();
        _idle.Dispose();
    }
}
