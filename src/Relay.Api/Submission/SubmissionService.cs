// SubmissionService: one submission from request to durable spool entry, the way SMTP does it: validate
// everything first (a bad request queues nothing), build the MIME, stream the bytes into IMessageSpool.Begin(),
// classify every recipient with the live strategy (source 'api', authenticated_as the client), take a rate slot
// (last, so a refused submission never uses one), commit, and only then remember the idempotency key, record the
// accepted event and answer 202.
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using MimeKit;
using MimeKit.Utils;
using Relay.Api.Templates;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Events;
using Relay.Spool;

namespace Relay.Api.Submission;

internal sealed class SubmissionService(
    string hostname,
    IMessageSpool spool,
    Func<RecipientContext, StrategyDecision> classify,
    IAcceptedMessages accepted,
    TimeProvider clock,
    Func<LiveApi> live,
    IdempotencyStore idempotency,
    ILogger log)
{
    public const string Source = DeliveryEventLog.ApiSource;

    /// <summary>See <see cref="ApiServer.QueueHasRoom"/>.</summary>
    public Func<string, bool>? QueueHasRoom { get; init; }

    /// <summary>Submits one message; <paramref name="key"/> is the Idempotency-Key (null = none).</summary>
    public async Task<ApiOutcome> SubmitAsync(ApiClientSettings client, MessageRequest request, string? key, string bodyHash,
                                              string remoteIp, CancellationToken cancellationToken)
    {
        if (key is null) return await SubmitOnceAsync(client, request, null, bodyHash, remoteIp, cancellationToken);
        switch (idempotency.Reserve(client.Name, key, bodyHash))
        {
            case IdempotencyStore.Reservation.Replay replay:
                return ApiOutcome.Accepted(replay.Entry.Id, replay.Entry.Recipients, replay.Entry.NotBefore);
            case IdempotencyStore.Reservation.Conflict:
                return ApiOutcome.Problem(422, "idempotency-key-reused", "Idempotency-Key reused",
                    "this Idempotency-Key was used for a different request body within the idempotency window");
            case IdempotencyStore.Reservation.Wait wait:
                return await wait.Outcome.WaitAsync(cancellationToken);
        }
        ApiOutcome outcome;
        try
        {
            outcome = await SubmitOnceAsync(client, request, key, bodyHash, remoteIp, cancellationToken);
        }
        catch (Exception)
        {
            idempotency.Abandon(client.Name, key, ApiOutcome.Problem(503, "not-queued", "Not queued", "the first request with this key failed; retry"));
            throw;
        }
        if (outcome.Status != 202) idempotency.Abandon(client.Name, key, outcome);
        return outcome;
    }

    private async Task<ApiOutcome> SubmitOnceAsync(ApiClientSettings client, MessageRequest request, string? key, string bodyHash,
                                                   string remoteIp, CancellationToken cancellationToken)
    {
        var state = live();
        var problems = new ProblemList();
        var m = await RequestValidator.ValidateAsync(request, client, state.Templates, problems, cancellationToken);
        if (m is null) return ApiOutcome.Invalid(problems);

        foreach (var sender in new[] { m.From.Address, m.MailFrom }.Distinct(StringComparer.OrdinalIgnoreCase))
        {
            if (client.MaySend(sender)) continue;
            log.SenderRefused(client.Name, sender);
            return ApiOutcome.Problem(403, "sender-not-allowed", "Sender not allowed",
                $"client '{client.Name}' may not send as <{sender}> (allowed-senders)");
        }

        var now = clock.GetUtcNow();
        var message = MessageComposer.Build(m, hostname, now);
        var bytes = MessageComposer.ToBytes(message);
        if (bytes.Length > client.MaxMessageSize)
            return ApiOutcome.Problem(413, "message-too-large", "Message too large",
                $"the built message is {bytes.Length} bytes; this client's max-message-size is {client.MaxMessageSize}");

        // Under "reject", refuse early when no slot is free (before any spool work); the slot itself is taken
        // below, after the last check that can refuse, so a refused submission never uses one up.
        if (client.RatePolicy == ApiRatePolicy.Reject && state.Rates.TryGetValue(client.Name, out var early) && !early.IsFree(now, out var wait))
            return RateLimited(client, wait);

        await using var incoming = spool.Begin();
        MessageEnvelope envelope;
        DateTimeOffset? notBefore;
        try
        {
            await incoming.WriteAsync(TraceHeader(client, remoteIp, incoming.Id, m.Recipients, now), cancellationToken);
            await incoming.WriteAsync(bytes, cancellationToken);
            var recipients = new List<RecipientEntry>(m.Recipients.Count);
            foreach (var rcpt in m.Recipients)
            {
                var decision = classify(new RecipientContext
                {
                    Recipient = rcpt,
                    Sender = m.MailFrom,
                    Priority = m.Priority,
                    Source = Source,
                    Size = incoming.Length,
                    RemoteIp = remoteIp,
                    Listener = Source,
                    AuthenticatedAs = client.Name,
                    Subject = message.Subject ?? "",
                    Headers = name => message.Headers[name],
                });
                if (decision.Error is { } error) log.ClassificationFellBack(rcpt, decision.Schedule.Name, error.Message);
                if (QueueHasRoom?.Invoke(decision.Schedule.QueueName) == false)
                    return ApiOutcome.Problem(503, "queue-full", "Queue full",
                        $"virtual queue '{decision.Schedule.QueueName}' is full (max-size); nothing was queued, retry later")
                        with { RetryAfter = TimeSpan.FromSeconds(60) };
                recipients.Add(new RecipientEntry
                {
                    Address = rcpt,
                    Notify = m.Notify,
                    Schedule = decision.Schedule.Name,
                    Queue = decision.Schedule.QueueName,
                });
            }
            // The rate slot is taken last, after every check that can refuse (a full queue must not use one up).
            notBefore = null;
            if (state.Rates.TryGetValue(client.Name, out var rate))
            {
                if (client.RatePolicy == ApiRatePolicy.Reject)
                {
                    if (!rate.TryTake(now, out var retryAfter)) return RateLimited(client, retryAfter);
                }
                else notBefore = rate.Hold(now);
            }
            envelope = new MessageEnvelope
            {
                Id = incoming.Id,
                Sender = m.MailFrom,
                ArrivedAt = now,
                Recipients = recipients,
                Priority = m.Priority,
                Source = Source,
                EnvelopeId = m.EnvelopeId,
                Return = m.Return,
                Body = BodyType.SevenBit,
                SmtpUtf8 = m.Recipients.Append(m.MailFrom).Any(a => !Ascii.IsValid(a)),
                Size = incoming.Length,
                RemoteIp = remoteIp,
                AuthenticatedAs = client.Name,
                Listener = Source,
                NotBefore = notBefore,
            };
            // Not cancelled by a client that hangs up: once the bytes are in, finishing is cheaper than a retry.
            await incoming.CommitAsync(envelope, CancellationToken.None);
        }
        catch (Exception e) when (e is SpoolWriteException or IOException)
        {
            log.SpoolFailed(incoming.Id, e.Message, e);
            return ApiOutcome.Problem(503, "not-queued", "Not queued", "the spool could not store the message; nothing was queued, retry later")
                with { RetryAfter = TimeSpan.FromSeconds(30) };
        }

        log.Queued(envelope.Id, envelope.Sender, client.Name, envelope.Size, envelope.Recipients.Count, envelope.Priority,
            notBefore?.ToString("O") ?? "-");
        var outcome = ApiOutcome.Accepted(envelope.Id, envelope.Recipients.Count, notBefore);
        // The idempotency record and the accepted event are independent files: their fsyncs run side by side.
        var remembered = key is null ? Task.CompletedTask
            : idempotency.CompleteAsync(new IdempotencyStore.Entry(client.Name, key, bodyHash, envelope.Id, envelope.Recipients.Count, now, notBefore), outcome);
        await RecordAcceptedAsync(envelope);
        await remembered;
        return outcome;
    }

    private async Task RecordAcceptedAsync(MessageEnvelope envelope)
    {
        try
        {
            await accepted.MessageAcceptedAsync(envelope, CancellationToken.None);
        }
        catch (Exception e)
        {
            // Queued is queued: answering an error now would make the client send it twice.
            log.AcceptedEventFailed(envelope.Id, e);
        }
    }

    private static ApiOutcome RateLimited(ApiClientSettings client, TimeSpan retryAfter) =>
        ApiOutcome.Problem(429, "rate-limited", "Too many messages",
            $"client '{client.Name}' is limited to {client.Rate}; retry after {Math.Ceiling(retryAfter.TotalSeconds)}s") with { RetryAfter = retryAfter };

    /// <summary>Our Received: (RFC 5321 §4.4) naming the client, its address and the queue id.</summary>
    private byte[] TraceHeader(ApiClientSettings client, string remoteIp, string id, IReadOnlyList<string> recipients, DateTimeOffset now)
    {
        var text = new StringBuilder();
        text.Append("Received: from ").Append(Safe(client.Name)).Append(" ([").Append(Safe(remoteIp)).Append("])\r\n")
            .Append("\tby ").Append(hostname).Append(" (Relay) with HTTP id ").Append(id);
        if (recipients.Count == 1) text.Append("\r\n\tfor <").Append(Safe(recipients[0])).Append('>');
        text.Append("; ").Append(DateUtils.FormatDate(now)).Append("\r\n");
        return Encoding.UTF8.GetBytes(text.ToString());
    }

    private static string Safe(string value) =>
        string.Create(Math.Min(value.Length, 255), value, static (span, source) =>
        {
            for (var i = 0; i < span.Length; i++)
                span[i] = char.IsControl(source[i]) || source[i] is '(' or ')' or '<' or '>' || source[i] > '~' ? '?' : source[i];
        });

    public static string Hash(ReadOnlySpan<byte> body) => Convert.ToHexStringLower(SHA256.HashData(body));
}
