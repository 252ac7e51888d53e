// DeliveryAgent: one attempt for the recipients of one message and domain (IDeliveryAgent). Resolves the
// destination (smart-host route, or MX), tries its hosts in order over pooled MailKit connections, and REPORTS
// one outcome per recipient; the scheduler decides what happens next.
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using MailKit.Net.Smtp;
using MailKit.Security;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MimeKit;
using Relay.Config.Settings;
using Relay.Scheduler;
using Relay.Spool;

namespace Relay.Delivery;

/// <summary>Outbound SMTP delivery: MX lookup, MailKit sessions, per-host connection pools and limits.</summary>
public sealed class DeliveryAgent : IDeliveryAgent, IAsyncDisposable
{
    private readonly string _hostname;
    private readonly DeliverySettings _delivery;
    private readonly DeliveryOptions _options;
    private readonly TimeProvider _clock;
    private readonly ILogger _log;
    private readonly MxResolver _resolver;
    private readonly ConnectionPool _pool;
    private readonly RateLimiter _rates;

    /// <param name="hostname"><c>server.hostname</c>: the EHLO name.</param>
    /// <param name="resolver"><c>[resolver]</c>: nameservers ("ip:port"; empty = system) and timeout.</param>
    /// <param name="delivery"><c>[delivery] port</c> and <c>connect-timeout</c>.</param>
    /// <param name="options">The other <c>[delivery]</c> keys (see README.md).</param>
    public DeliveryAgent(string hostname, ResolverSettings resolver, DeliverySettings delivery, DeliveryOptions options,
                         TimeProvider clock, ILogger? logger = null)
        : this(hostname, resolver, delivery, options, clock, logger, random: null)
    {
    }

    internal DeliveryAgent(string hostname, ResolverSettings resolver, DeliverySettings delivery, DeliveryOptions options,
                           TimeProvider clock, ILogger? logger, Random? random)
    {
        _hostname = hostname;
        _delivery = delivery;
        _options = options;
        _clock = clock;
        _log = logger ?? NullLogger.Instance;
        _resolver = new MxResolver(resolver, options, clock, random);
        _pool = new ConnectionPool(options, clock);
        _rates = new RateLimiter(clock);
    }

    internal MxResolver Resolver => _resolver;
    internal ConnectionPool Pool => _pool;

    public async Task<IReadOnlyList<RecipientOutcome>> DeliverAsync(DeliveryRequest request, CancellationToken cancellationToken)
    {
        var attempt = new Attempt(request);
        try
        {
            await DeliverAsync(attempt, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (UnrelayableMessageException e)
        {
            attempt.FailPending(OutcomeClassifier.Perm(554, "5.6.0", e.Message));
        }
        catch (Exception e)
        {
            _log.Unexpected(request.MessageId, e);
            attempt.FailPending(OutcomeClassifier.Temp(451, "4.3.0", $"local error: {e.GetType().Name}: {e.Message}"));
        }
        attempt.FailPending(attempt.LastError ?? OutcomeClassifier.Temp(451, "4.4.0", "no host could be tried"));
        Log(attempt);
        return attempt.Outcomes;
    }

    private async Task DeliverAsync(Attempt attempt, CancellationToken cancellationToken)
    {
        var request = attempt.Request;
        var domain = request.Domain;

        if (_options.RateFor(domain) is { } rate && !_rates.TryTake(domain, rate))
        {
            attempt.FailPending(OutcomeClassifier.RateLimited(domain, rate));
            return;
        }

        var smartHost = _options.SmartHostFor(request);
        var destination = smartHost is null
            ? await _resolver.ResolveAsync(domain, cancellationToken)
            : await _resolver.ResolveHostAsync(smartHost.Host, cancellationToken);
        if (destination.Error is { } dnsError)
        {
            attempt.FailPending(dnsError);
            return;
        }

        var recipients = attempt.Mailboxes();
        if (recipients.Count == 0) return;

        using var message = await SpooledMessage.OpenAsync(await request.OpenContent(cancellationToken), request.Envelope.Body, cancellationToken);
        var sender = new MailboxAddress(string.Empty, request.Envelope.Sender);
        var policy = smartHost is null
            ? new TlsPolicy(_options.RequiresTls(domain) ? SecureSocketOptions.StartTls : SecureSocketOptions.StartTlsWhenAvailable,
                            _options.RequiresTls(domain), _delivery.Port, null, null)
            : TlsPolicy.For(smartHost);

        foreach (var host in destination.Hosts)
        {
            foreach (var address in host.Addresses)
            {
                var done = await TryHostAsync(attempt, host.Name, new IPEndPoint(address, policy.Port), policy,
                                              message, sender, recipients, cancellationToken);
                if (done) return;
            }
        }
    }

    /// <summary>One host: true when the recipients got their outcomes here, false to try the next host.</summary>
    private async Task<bool> TryHostAsync(Attempt attempt, string hostName, IPEndPoint endPoint, TlsPolicy policy,
                                          SpooledMessage message, MailboxAddress sender,
                                          IReadOnlyList<(MailboxAddress Mailbox, RecipientEntry Entry)> recipients,
                                          CancellationToken cancellationToken)
    {
        var relay = $"{hostName}[{endPoint.Address}]:{endPoint.Port}";
        var remote = $"{hostName}[{endPoint.Address}]";
        attempt.Relay = relay;
        var key = $"{hostName}|{endPoint}|{policy.Options}|{policy.Username}";
        var slot = await _pool.AcquireAsync(key, cancellationToken);
        if (slot is null)
        {
            attempt.LastError = OutcomeClassifier.ConnectionLimit(remote);
            return false;
        }

        var reusable = false;
        try
        {
            for (var tries = 0; ; tries++)
            {
                if (slot.Connection is null)
                {
                    var (connection, failure) = await ConnectAsync(hostName, endPoint, policy, remote, cancellationToken);
                    if (failure is not null)
                    {
                        attempt.LastError = failure;
                        _log.HostFailed(attempt.Request.MessageId, relay, failure.ToString());
                        return false;
                    }
                    slot.Connection = connection;
                }
                var client = slot.Connection!.Client;

                if (attempt.Request.Envelope.SmtpUtf8 && !client.Capabilities.HasFlag(SmtpCapabilities.UTF8))
                {
                    attempt.FailPending(OutcomeClassifier.NeedsSmtpUtf8(remote));
                    reusable = true;
                    return true;
                }
                if (client.Capabilities.HasFlag(SmtpCapabilities.Size) && client.MaxSize > 0 && (ulong)message.Size > (ulong)client.MaxSize)
                {
                    attempt.FailPending(OutcomeClassifier.TooBig(remote, message.Size, (long)client.MaxSize));
                    reusable = true;
                    return true;
                }

                var tx = new SmtpTransaction(attempt.Request.Envelope, recipients, message.Size);
                client.Current = tx;
                client.DeliveryStatusNotificationType = attempt.Request.Envelope.Return switch
                {
                    DsnReturn.Full => DeliveryStatusNotificationType.Full,
                    DsnReturn.Headers => DeliveryStatusNotificationType.HeadersOnly,
                    _ => DeliveryStatusNotificationType.Unspecified,
                };
                var format = FormatOptions.Default.Clone();
                format.International = attempt.Request.Envelope.SmtpUtf8;
                try
                {
                    var reply = await client.SendAsync(format, message.Message, sender, recipients.Select(r => r.Mailbox), cancellationToken);
                    slot.Connection.Messages++;
                    var (enhanced, text) = OutcomeClassifier.SplitEnhanced(250, reply);
                    foreach (var (mailbox, entry) in recipients)
                    {
                        if (tx.RcptReplies.TryGetValue(mailbox, out var r) && (int)r.StatusCode is >= 200 and < 300)
                            attempt.Set(entry, new RecipientOutcome(entry.Address, OutcomeKind.Delivered, 250, enhanced, text, remote)
                            {
                                // NOTIFY/ORCPT/ENVID stopped here (MailKit sends them only to a DSN server): "relayed".
                                RemoteLacksDsn = !client.Capabilities.HasFlag(SmtpCapabilities.Dsn),
                            });
                        else
                            attempt.Set(entry, RcptFailure(tx, mailbox, remote).For(entry.Address));
                    }
                    reusable = true;
                    return true;
                }
                catch (SmtpCommandException e)
                {
                    // MailKit has sent RSET: the connection is still good for the next message.
                    slot.Connection.Messages++;
                    reusable = client.IsConnected;
                    var stage = !tx.SenderAccepted ? "MAIL FROM" : tx.RcptReplies.Count < recipients.Count ? "RCPT TO" : "end of DATA";
                    var failure = OutcomeClassifier.FromReply((int)e.StatusCode, e.Message, remote, stage);
                    foreach (var (mailbox, entry) in recipients)
                        attempt.Set(entry, e is NoRecipientsAcceptedException || IsRefused(tx, mailbox)
                            ? RcptFailure(tx, mailbox, remote).For(entry.Address)
                            : failure.For(entry.Address));
                    return true;
                }
                catch (Exception e) when (e is IOException or SmtpProtocolException or SocketException or MailKit.ServiceNotConnectedException
                                          || e is OperationCanceledException && !cancellationToken.IsCancellationRequested)
                {
                    var nothingSaid = !tx.SenderAccepted && tx.RcptReplies.Count == 0;
                    var wasReused = slot.Connection.Reused;
                    CloseBroken(slot);
                    if (nothingSaid && wasReused && tries == 0)
                    {
                        _log.StaleConnection(relay);
                        continue;   // the server closed an idle pooled connection: reconnect once
                    }
                    var failure = OutcomeClassifier.FromException(e, remote, tx.SenderAccepted ? "message content" : "MAIL FROM");
                    attempt.LastError = failure;
                    if (tx.RcptReplies.Values.All(r => (int)r.StatusCode >= 300))
                    {
                        // Nothing was accepted here, so trying the next host cannot duplicate the message.
                        foreach (var (mailbox, entry) in recipients)
                            if (tx.RcptReplies.ContainsKey(mailbox)) attempt.Set(entry, RcptFailure(tx, mailbox, remote).For(entry.Address));
                        if (attempt.AllSet) return true;
                        _log.HostFailed(attempt.Request.MessageId, relay, failure.ToString());
                        return false;
                    }
                    foreach (var (mailbox, entry) in recipients)
                        attempt.Set(entry, IsRefused(tx, mailbox) ? RcptFailure(tx, mailbox, remote).For(entry.Address) : failure.For(entry.Address));
                    return true;
                }
                finally
                {
                    client.Current = null;
                }
            }
        }
        finally
        {
            slot.Release(reusable);
        }
    }

    private static bool IsRefused(SmtpTransaction tx, MailboxAddress mailbox) =>
        tx.RcptReplies.TryGetValue(mailbox, out var r) && (int)r.StatusCode >= 300;

    private static void CloseBroken(ConnectionPool.Slot slot)
    {
        if (slot.Connection is { } broken)
        {
            broken.Client.Dispose();
            slot.Connection = null;
        }
    }

    private static Failure RcptFailure(SmtpTransaction tx, MailboxAddress mailbox, string remote) =>
        tx.RcptReplies.TryGetValue(mailbox, out var r)
            ? OutcomeClassifier.FromReply((int)r.StatusCode, r.Response, remote, "RCPT TO")
            : OutcomeClassifier.Temp(451, "4.4.0", $"no reply to RCPT TO from {remote}", remote);

    private async Task<(PooledConnection?, Failure?)> ConnectAsync(string hostName, IPEndPoint endPoint, TlsPolicy policy,
                                                                  string remote, CancellationToken cancellationToken)
    {
        var client = new RelaySmtpClient
        {
            LocalDomain = _hostname,
            Timeout = (int)Math.Min(int.MaxValue, _options.CommandTimeout.TotalMilliseconds),
            CheckCertificateRevocation = false,
            ServerCertificateValidationCallback = policy.ValidCertificateRequired
                ? (_, _, _, errors) => errors == SslPolicyErrors.None
                : (_, _, _, _) => true,   // opportunistic TLS: an unverified certificate beats plain text, as MTAs do
        };
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using (var connect = new CancellationTokenSource(_delivery.ConnectTimeout, _clock))
            using (var linked = CancellationTokenSource.CreateLinkedTokenSource(connect.Token, cancellationToken))
            {
                try
                {
                    await socket.ConnectAsync(endPoint, linked.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"connect to {remote} timed out");
                }
            }
            _pool.CountOpened();
            // MailKit takes the name for SNI and certificate checks; an address literal is given as the bare address.
            var name = hostName.StartsWith('[') ? endPoint.Address.ToString() : hostName;
            await client.ConnectAsync(socket, name, endPoint.Port, policy.Options, cancellationToken);
            if (policy.ValidCertificateRequired && !client.IsSecure)
            {
                client.Dispose();
                return (null, OutcomeClassifier.TlsRequired(remote));
            }
            if (policy.Username is not null)
                await client.AuthenticateAsync(policy.Username, policy.Password ?? string.Empty, cancellationToken);
            return (new PooledConnection(client), null);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            socket.Dispose();
            client.Dispose();
            return (null, e switch
            {
                SmtpCommandException c => GreetingRefused((int)c.StatusCode, c.Message, remote),
                NotSupportedException when policy.ValidCertificateRequired => OutcomeClassifier.TlsRequired(remote),
                AuthenticationException auth => OutcomeClassifier.Temp(454, "4.7.0", $"authentication to {remote} failed: {auth.Message}", remote),
                TimeoutException => OutcomeClassifier.Temp(421, "4.4.1", $"connect to {remote}: timed out", remote),
                _ => OutcomeClassifier.FromException(e, remote, "greeting"),
            });
        }
    }

    /// <summary>Any failed greeting (or EHLO) skips the host, 5xx too (Postfix's smtp_skip_5xx_greeting): temporary here.</summary>
    private static Failure GreetingRefused(int code, string response, string remote)
    {
        var (enhanced, text) = OutcomeClassifier.SplitEnhanced(code, response);
        return OutcomeClassifier.Temp(code >= 500 ? 421 : code, "4" + enhanced[1..], $"host {remote} refused to talk to me: {text}", remote);
    }

    private void Log(Attempt attempt)
    {
        var delay = (_clock.GetUtcNow() - attempt.Request.Envelope.ArrivedAt).TotalSeconds;
        foreach (var o in attempt.Outcomes)
        {
            var relay = o.RemoteHost is null ? attempt.Relay ?? "none" : attempt.Relay ?? o.RemoteHost;
            var reply = $"{o.Code} {o.EnhancedStatus} {o.Text}";
            switch (o.Kind)
            {
                case OutcomeKind.Delivered: _log.Sent(attempt.Request.MessageId, o.Address, relay, delay, o.EnhancedStatus, reply); break;
                case OutcomeKind.Temporary: _log.Deferred(attempt.Request.MessageId, o.Address, relay, delay, o.EnhancedStatus, reply); break;
                default: _log.Bounced(attempt.Request.MessageId, o.Address, relay, delay, o.EnhancedStatus, reply); break;
            }
        }
    }

    public ValueTask DisposeAsync() => _pool.DisposeAsync();

    private sealed record TlsPolicy(SecureSocketOptions Options, bool ValidCertificateRequired, int Port, string? Username, string? Password)
    {
        public static TlsPolicy For(SmartHost host) => new(
            host.Tls switch
            {
                SmartHostTls.Implicit => SecureSocketOptions.SslOnConnect,
                SmartHostTls.StartTls => SecureSocketOptions.StartTls,
                SmartHostTls.None => SecureSocketOptions.None,
                _ => SecureSocketOptions.StartTlsWhenAvailable,
            },
            host.Tls is SmartHostTls.Implicit or SmartHostTls.StartTls, host.Port, host.Username, host.Password);
    }

    /// <summary>The outcomes of one DeliverAsync call, one per recipient, in request order.</summary>
    private sealed class Attempt(DeliveryRequest request)
    {
        private readonly RecipientOutcome?[] _outcomes = new RecipientOutcome?[request.Recipients.Count];

        public DeliveryRequest Request { get; } = request;
        public Failure? LastError { get; set; }
        public string? Relay { get; set; }
        public bool AllSet => _outcomes.All(o => o is not null);
        public IReadOnlyList<RecipientOutcome> Outcomes => _outcomes.Select(o => o!).ToArray();

        /// <summary>The recipients still without an outcome, as MailKit mailboxes; bad syntax fails here.</summary>
        public IReadOnlyList<(MailboxAddress, RecipientEntry)> Mailboxes()
        {
            var list = new List<(MailboxAddress, RecipientEntry)>();
            for (var i = 0; i < _outcomes.Length; i++)
            {
                if (_outcomes[i] is not null) continue;
                var entry = Request.Recipients[i].Entry;
                try
                {
                    list.Add((new MailboxAddress(string.Empty, entry.Address), entry));
                }
                catch (ParseException)
                {
                    _outcomes[i] = OutcomeClassifier.BadAddress(entry.Address).For(entry.Address);
                }
            }
            return list;
        }

        public void Set(RecipientEntry entry, RecipientOutcome outcome)
        {
            for (var i = 0; i < _outcomes.Length; i++)
                if (ReferenceEquals(Request.Recipients[i].Entry, entry)) { _outcomes[i] = outcome; return; }
        }

        public void FailPending(Failure failure)
        {
            for (var i = 0; i < _outcomes.Length; i++)
                _outcomes[i] ??= failure.For(Request.Recipients[i].Address);
        }
    }
}
