// QueueCli: `relay queue list|show|retry|cancel` over the admin API, printing a table in the spirit of
// `postqueue -p` (or the API's JSON with --json). The host's QueueCommand only finds URL and token.
using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using Relay.Admin.Api;

namespace Relay.Admin.Client;

/// <param name="Words">What follows <c>queue</c>: <c>list</c>, <c>show ID</c>, <c>retry ID</c>, <c>cancel ID</c>.</param>
public sealed record QueueCliRequest(
    IReadOnlyList<string> Words, bool Json = false, string? Queue = null, string? Domain = null, string? Sender = null,
    string? Status = null, bool Bounce = false);

public static class QueueCli
{
    public const string Usage = """
        usage:
          relay queue list [--queue Q] [--domain D] [--sender S] [--status pending|failed|delivered|expired] [--json]
          relay queue show ID [--json]
          relay queue retry ID
          relay queue cancel ID [--bounce]
          (every one: [--config FILE] or --url http://host:port --token TOKEN)
        """;

    /// <summary>Exit codes: 0 ok, 1 the API refused or failed, 2 usage.</summary>
    public static async Task<int> RunAsync(AdminClient client, QueueCliRequest request, TextWriter stdout, TextWriter stderr,
                                           CancellationToken cancellationToken)
    {
        try
        {
            return request.Words switch
            {
                ["list"] => await ListAsync(client, request, stdout, stderr, cancellationToken),
                ["show", var id] => await ShowAsync(client, id, request.Json, stdout, stderr, cancellationToken),
                ["retry", var id] => await RetryAsync(client, id, request.Json, stdout, stderr, cancellationToken),
                ["cancel", var id] => await CancelAsync(client, id, request.Bounce, request.Json, stdout, stderr, cancellationToken),
                _ => await UsageAsync(stderr),
            };
        }
        catch (HttpRequestException e) when (e.InnerException is SocketException || e.HttpRequestError == HttpRequestError.ConnectionError)
        {
            await stderr.WriteLineAsync($"relay: cannot reach the admin API at {client.BaseAddress}: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is HttpRequestException or JsonException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            await stderr.WriteLineAsync($"relay: admin API at {client.BaseAddress}: {e.Message}");
            return 1;
        }
    }

    private static async Task<int> UsageAsync(TextWriter stderr)
    {
        await stderr.WriteLineAsync(Usage);
        return 2;
    }

    private static async Task<int> ListAsync(AdminClient client, QueueCliRequest r, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var all = new List<MessageView>();
        string? cursor = null;
        do
        {
            var reply = await client.GetAsync(AdminClient.MessagesPath(r.Queue, r.Domain, r.Sender, r.Status, null, cursor), ct);
            if (!reply.Ok) return await FailAsync(reply, "list", stderr);
            var page = reply.Parse<MessagesResponse>();
            all.AddRange(page.Messages);
            cursor = page.Next;
        } while (cursor is not null);

        if (r.Json)
        {
            await stdout.WriteLineAsync(JsonSerializer.Serialize(new MessagesResponse(all, null), ApiJson.Options));
            return 0;
        }
        await stdout.WriteAsync(Table(all));
        return 0;
    }

    /// <summary>
    /// postqueue -p layout: one block per message (id, size, arrival, priority, sender), then each recipient
    /// indented, preceded by its last error in parentheses. A trailing mark on the id: '!' dead letter, '*' delivering
    /// is not known here, so only '!' is used.
    /// </summary>
    public static string Table(IReadOnlyList<MessageView> messages)
    {
        var w = new StringWriter(CultureInfo.InvariantCulture) { NewLine = "\n" };
        if (messages.Count == 0)
        {
            w.WriteLine("Mail queue is empty");
            return w.ToString();
        }
        var indent = new string(' ', 56);   // under the Sender/Recipient column
        w.WriteLine("-Queue ID-------- --Size-- ----Arrival Time (UTC)- -Pri -Sender/Recipient-------");
        long bytes = 0;
        var recipients = 0;
        foreach (var m in messages)
        {
            bytes += m.Size;
            var mark = m.Status == "failed" ? "!" : " ";
            w.WriteLine($"{m.Id + mark,-17} {m.Size,8} {m.ArrivedAt:yyyy-MM-dd HH:mm:ss}     {m.Priority,4} {(m.Sender.Length == 0 ? "<>" : m.Sender)}");
            foreach (var rcpt in m.Recipients)
            {
                recipients++;
                if (rcpt.LastError is { } error) w.WriteLine($"{indent}({error})");
                var next = rcpt.NextAttemptAt is { } at ? $", next {at:yyyy-MM-dd HH:mm:ss}" : "";
                w.WriteLine($"{indent}{rcpt.Address}  [{rcpt.Queue}/{rcpt.Schedule}, {rcpt.Status}, {rcpt.Attempts} attempt(s){next}]");
            }
            if (m.Status == "failed" && m.Reason is { } reason && m.Recipients.All(x => x.LastError is null))
                w.WriteLine($"{indent}({reason})");
            w.WriteLine();
        }
        w.WriteLine($"-- {Math.Max(1, (bytes + 1023) / 1024)} Kbytes in {messages.Count} Request{(messages.Count == 1 ? "" : "s")}, {recipients} Recipient{(recipients == 1 ? "" : "s")}.");
        return w.ToString();
    }

    private static async Task<int> ShowAsync(AdminClient client, string id, bool json, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var reply = await client.GetAsync(AdminClient.MessagePath(id), ct);
        if (!reply.Ok) return await FailAsync(reply, id, stderr);
        if (json)
        {
            await stdout.WriteLineAsync(reply.Body);
            return 0;
        }
        var m = reply.Parse<MessageDetail>();
        var w = new StringWriter(CultureInfo.InvariantCulture) { NewLine = "\n" };
        w.WriteLine($"id:        {m.Id}");
        w.WriteLine($"status:    {m.Status}{(m.Reason is null ? "" : $" ({m.Reason})")}");
        w.WriteLine($"sender:    {(m.Sender.Length == 0 ? "<>" : m.Sender)}");
        w.WriteLine($"size:      {m.Size}");
        w.WriteLine($"priority:  {m.Priority}");
        w.WriteLine($"arrived:   {m.ArrivedAt:yyyy-MM-dd HH:mm:ss} UTC");
        w.WriteLine($"source:    {m.Source}{(m.RemoteIp is null ? "" : $" from {m.RemoteIp}")}{(m.AuthenticatedAs is null ? "" : $" as {m.AuthenticatedAs}")}");
        if (m.FinalizedAt is { } f) w.WriteLine($"finalized: {f:yyyy-MM-dd HH:mm:ss} UTC{(m.RetainedUntil is { } until ? $", kept until {until:yyyy-MM-dd HH:mm:ss} UTC" : "")}");
        w.WriteLine("recipients:");
        foreach (var r in m.Recipients)
        {
            var next = r.NextAttemptAt is { } at ? $", next {at:yyyy-MM-dd HH:mm:ss}" : "";
            w.WriteLine($"  {r.Address}  {r.Status}  queue={r.Queue} schedule={r.Schedule} attempts={r.Attempts}{next}");
            if (r.LastError is { } e) w.WriteLine($"    last error: {e}{(r.RemoteHost is null ? "" : $" ({r.RemoteHost})")}");
        }
        if (m.Attempts.Count > 0)
        {
            w.WriteLine("attempts (since the relay started):");
            foreach (var a in m.Attempts)
                w.WriteLine($"  {a.At:yyyy-MM-dd HH:mm:ss}  #{a.Attempt} {a.Recipient}  {a.Result}  {a.Code} {a.Status} {a.Text}{(a.RemoteHost is null ? "" : $" ({a.RemoteHost})")}");
        }
        if (m.Dsns.Count > 0)
        {
            w.WriteLine("dsns:");
            foreach (var d in m.Dsns) w.WriteLine($"  {d.At:yyyy-MM-dd HH:mm:ss}  {d.Kind}  {string.Join(", ", d.Recipients)}");
        }
        await stdout.WriteAsync(w.ToString());
        return 0;
    }

    private static async Task<int> RetryAsync(AdminClient client, string id, bool json, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var reply = await client.SendAsync(HttpMethod.Post, AdminClient.MessagePath(id) + "/retry", ct);
        if (!reply.Ok) return await FailAsync(reply, id, stderr);
        if (json) { await stdout.WriteLineAsync(reply.Body); return 0; }
        var a = reply.Parse<ActionResponse>();
        await stdout.WriteLineAsync(a.RequeuedAs is { } newId
            ? $"{a.Id}: requeued as {newId} ({a.Recipients} recipient(s))"
            : $"{a.Id}: retry now ({a.Recipients} recipient(s))");
        return 0;
    }

    private static async Task<int> CancelAsync(AdminClient client, string id, bool bounce, bool json, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var reply = await client.SendAsync(HttpMethod.Delete, AdminClient.MessagePath(id) + (bounce ? "?bounce=true" : ""), ct);
        if (!reply.Ok) return await FailAsync(reply, id, stderr);
        if (json) { await stdout.WriteLineAsync(reply.Body); return 0; }
        var a = reply.Parse<ActionResponse>();
        await stdout.WriteLineAsync(bounce
            ? $"{a.Id}: removed from the queue; {a.Recipients} pending recipient(s) bounced"
            : $"{a.Id}: removed from the queue ({a.Recipients} pending recipient(s))");
        return 0;
    }

    private static async Task<int> FailAsync(AdminReply reply, string what, TextWriter stderr)
    {
        var text = reply.Status switch
        {
            401 => "the admin API refused the token (check [admin] token, RELAY_ADMIN_TOKEN or --token)",
            404 => reply.ErrorText(),
            _ => $"{reply.Status}: {reply.ErrorText()}",
        };
        await stderr.WriteLineAsync($"relay: queue: {what}: {text}");
        return 1;
    }
}
