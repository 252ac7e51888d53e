// Fixes from the review of main: live client reload, bounded token verification work, the batch byte limit,
// per-item batch failures, idempotency-log compaction while running, status before the accepted event, rate
// slots only for queued mail.
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Relay.Api.Tests.Harness;
using Relay.Config.Settings;
using Relay.Inbound.Policy;

namespace Relay.Api.Tests;

public sealed class ReviewFixTests
{
    private static readonly object Message = new { from = "a@app.test", to = "x@remote.test", text = "hello" };

    private static Task<HttpResponseMessage> TemplatesAsync(ApiHarness h, string token) => h.SendAsync(HttpMethod.Get, "/api/v1/templates", token);

    [Fact]
    public async Task Reconfigure_refuses_a_removed_clients_token_at_once_and_accepts_a_new_one()
    {
        await using var h = await ApiHarness.StartAsync();
        await h.SubmitAsync(Message);                                      // the app token is now cached as verified
        using (var before = await TemplatesAsync(h, ApiHarness.OtherToken)) Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        using (var unknown = await TemplatesAsync(h, "new-token")) Assert.Equal(HttpStatusCode.Unauthorized, unknown.StatusCode);

        var clients = h.Settings.Api.Clients.Values.Where(c => c.Name != "app").ToDictionary(c => c.Name);
        clients["fresh"] = h.Settings.Api.Clients["app"] with { Name = "fresh", Token = "new-token" };
        h.Server.Reconfigure(h.Settings.Api with { Clients = clients });

        using (var revoked = await h.PostAsync(Message)) Assert.Equal(HttpStatusCode.Unauthorized, revoked.StatusCode);
        using (var kept = await TemplatesAsync(h, ApiHarness.OtherToken)) Assert.Equal(HttpStatusCode.OK, kept.StatusCode);
        var id = await h.SubmitAsync(Message, "new-token");               // was cached as failed before the reload
        Assert.Equal("fresh", (await h.EnvelopeAsync(id)).AuthenticatedAs);
        Assert.Equal(2, h.Events.Accepted.Count);
    }

    [Fact]
    public async Task Random_tokens_against_a_pbkdf2_client_cost_a_bounded_number_of_derivations()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-11-23T12:00:00Z"));
        await using var h = await ApiHarness.StartAsync($$"""
            [api.client.slow]
            token = "{{SecretVerifier.Hash("slow-token", 1000)}}"
            """, clock);
        var burst = h.Server.UnknownTokenRate.Count;

        var answers = new List<HttpStatusCode>();
        for (var i = 0; i < burst + 15; i++)
        {
            using var r = await TemplatesAsync(h, $"guess-{i}");
            answers.Add(r.StatusCode);
        }
        Assert.All(answers, s => Assert.True(s is HttpStatusCode.Unauthorized or HttpStatusCode.TooManyRequests, s.ToString()));
        Assert.Equal(burst, h.Server.CostlyVerifications);                  // one PBKDF2 per token until the budget is spent
        Assert.Equal(15, answers.Count(s => s == HttpStatusCode.TooManyRequests));

        // A wrong token that was verified once is refused from the cache, even with no budget left.
        using (var again = await TemplatesAsync(h, "guess-0")) Assert.Equal(HttpStatusCode.Unauthorized, again.StatusCode);
        Assert.Equal(burst, h.Server.CostlyVerifications);

        // A plain or sha256 client's token never waits for the budget.
        using (var plain = await TemplatesAsync(h, ApiHarness.AppToken)) Assert.Equal(HttpStatusCode.OK, plain.StatusCode);
        using (var hashed = await TemplatesAsync(h, ApiHarness.OtherToken)) Assert.Equal(HttpStatusCode.OK, hashed.StatusCode);
        Assert.Equal(burst, h.Server.CostlyVerifications);

        clock.Advance(TimeSpan.FromSeconds(1));                             // the budget refills
        using (var ok = await TemplatesAsync(h, "slow-token")) Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using (var cached = await TemplatesAsync(h, "slow-token")) Assert.Equal(HttpStatusCode.OK, cached.StatusCode);
        Assert.Equal(burst + 1, h.Server.CostlyVerifications);
    }

    [Fact]
    public async Task A_reload_keeps_verified_pbkdf2_tokens_and_the_unknown_token_budget_is_per_address()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-11-23T12:00:00Z"));
        await using var h = await ApiHarness.StartAsync($$"""
            [api.client.slow]
            token = "{{SecretVerifier.Hash("slow-token", 1000)}}"
            [api.client.slow2]
            token = "{{SecretVerifier.Hash("slow2-token", 1000)}}"
            """, clock);
        using (var first = await TemplatesAsync(h, "slow-token")) Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var derived = h.Server.CostlyVerifications;

        h.Server.Reconfigure(h.Settings.Api with { MaxBatch = 7 });     // nothing about the clients changed
        for (var i = 0; i < h.Server.UnknownTokenRate.Count + 1; i++)   // 127.0.0.1 spends its whole budget
            using (var r = await TemplatesAsync(h, $"guess-{i}")) Assert.NotEqual(HttpStatusCode.OK, r.StatusCode);
        using (var throttled = await TemplatesAsync(h, "slow2-token")) Assert.Equal(HttpStatusCode.TooManyRequests, throttled.StatusCode);
        var spent = h.Server.CostlyVerifications;
        Assert.Equal(derived + (h.Server.UnknownTokenRate.Count - 1) * 2, spent);   // the first token took a slot too

        // The token verified before the reload is still known: no derivation, no budget needed.
        using (var kept = await TemplatesAsync(h, "slow-token")) Assert.Equal(HttpStatusCode.OK, kept.StatusCode);
        Assert.Equal(spent, h.Server.CostlyVerifications);

        // Another address has its own budget.
        using var other = new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (context, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                socket.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.2"), 0));
                await socket.ConnectAsync(context.DnsEndPoint, ct);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        });
        using var request = new HttpRequestMessage(HttpMethod.Get, h.Url("/api/v1/templates"));
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "slow2-token");
        using (var elsewhere = await other.SendAsync(request)) Assert.Equal(HttpStatusCode.OK, elsewhere.StatusCode);
        Assert.Equal(["127.0.0.1", "127.0.0.2", "20010DB800000001/64"],
            new[] { IPAddress.Parse("::ffff:127.0.0.1"), IPAddress.Parse("127.0.0.2"), IPAddress.Parse("2001:db8:0:1::5") }.Select(ApiServer.AddressKey));
    }

    [Fact]
    public async Task Changing_a_clients_rate_policy_from_hold_to_reject_starts_its_rate_afresh()
    {
        await using var h = await ApiHarness.StartAsync("""
            [api.client.held]
            token = "held-token"
            rate = "1/1h"
            """);
        for (var i = 0; i < 4; i++) await h.SubmitAsync(Message, "held-token");   // held: slots run 3 hours ahead
        var held = h.Settings.Api.Clients["held"];
        var clients = h.Settings.Api.Clients.Values.ToDictionary(c => c.Name);
        clients["held"] = held with { RatePolicy = ApiRatePolicy.Reject };
        h.Server.Reconfigure(h.Settings.Api with { Clients = clients });

        await h.SubmitAsync(Message, "held-token");                               // a fresh slot, not a 429 for 3 hours
        using var second = await h.PostAsync(Message, "held-token");
        Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);          // and the new policy applies
    }

    [Fact]
    public async Task A_batch_over_max_batch_size_is_413_and_queues_nothing()
    {
        await using var h = await ApiHarness.StartAsync(api: "max-batch-size = \"2KB\"");
        var text = new string('x', 1000);
        var items = string.Join(",", Enumerable.Range(0, 3).Select(_ => $$"""{ "from": "a@app.test", "to": "x@remote.test", "text": "{{text}}" }"""));
        using var response = await h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken, $"[{items}]");
        var body = await ApiHarness.JsonAsync(response);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Contains("max-batch-size", body["detail"]!.GetValue<string>());
        Assert.Equal(0, h.StoredMessages);
        Assert.Empty(h.Events.Accepted);

        // Under the limit a batch still goes through.
        using var small = await h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken,
            """[ { "from": "a@app.test", "to": "x@remote.test", "text": "short" } ]""");
        Assert.Equal((HttpStatusCode)207, small.StatusCode);
        Assert.Equal(1, h.Spool.Count);
    }

    [Fact]
    public async Task A_batch_item_whose_template_fails_to_render_is_a_400_and_the_others_keep_their_ids()
    {
        await using var h = await ApiHarness.StartAsync();
        await File.WriteAllTextAsync(Path.Combine(h.TemplatesPath, "broken.txt"), "Hi {% include 'no-such-partial' %}");
        var json = """
            [ { "from": "a@app.test", "to": "x@remote.test", "text": "one" },
              { "from": "a@app.test", "to": "y@remote.test", "template": "broken" },
              { "from": "a@app.test", "to": "z@remote.test", "text": "three" } ]
            """;
        using var response = await h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken, json);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == (HttpStatusCode)207, text);
        var results = JsonNode.Parse(text)!["results"]!.AsArray();
        Assert.Equal([202, 400, 202], results.Select(r => r!["status"]!.GetValue<int>()));
        Assert.Contains("broken", results[1]!["problem"]!["errors"]!["template"]![0]!.GetValue<string>());
        foreach (var i in new[] { 0, 2 }) Assert.NotNull(h.Spool.Find(results[i]!["id"]!.GetValue<string>()));
        Assert.Equal(2, h.Spool.Count);
    }

    [Fact]
    public async Task A_batch_item_that_throws_is_a_500_for_that_item_only()
    {
        var calls = 0;
        await using var h = await ApiHarness.StartAsync(queueHasRoom: _ =>
            Interlocked.Increment(ref calls) == 2 ? throw new InvalidOperationException("scheduler gone") : true);
        var items = string.Join(",", Enumerable.Range(0, 3).Select(i => $$"""{ "from": "a@app.test", "to": "x{{i}}@remote.test", "text": "t" }"""));
        using var response = await h.SendAsync(HttpMethod.Post, "/api/v1/messages:batch", ApiHarness.AppToken, $"[{items}]");
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == (HttpStatusCode)207, text);
        var results = JsonNode.Parse(text)!["results"]!.AsArray();
        Assert.Equal([202, 202, 500], results.Select(r => r!["status"]!.GetValue<int>()).Order());
        foreach (var r in results.Where(r => r!["status"]!.GetValue<int>() == 202))
            Assert.NotNull(h.Spool.Find(r!["id"]!.GetValue<string>()));
        Assert.Equal(2, h.Spool.Count);
    }

    [Fact]
    public async Task The_idempotency_log_is_compacted_when_it_passes_its_threshold_and_live_keys_still_replay()
    {
        var dir = Directory.CreateTempSubdirectory("relay-idem-");
        try
        {
            var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-11-23T12:00:00Z"));
            var window = TimeSpan.FromHours(1);
            var path = Path.Combine(dir.FullName, IdempotencyStore.FileName);
            async Task AddAsync(IdempotencyStore store, string key)
            {
                Assert.IsType<IdempotencyStore.Reservation.Owner>(store.Reserve("app", key, "hash-" + key));
                await store.CompleteAsync(new IdempotencyStore.Entry("app", key, "hash-" + key, "id-" + key, 1, clock.GetUtcNow(), null),
                    ApiOutcome.Accepted("id-" + key, 1, null));
            }

            var store = IdempotencyStore.Open(dir.FullName, window, clock, NullLogger.Instance, compactAt: 4096);
            for (var i = 0; i < 20; i++) await AddAsync(store, $"old-{i}");  // ~150 bytes each: under the threshold
            Assert.Contains("old-0", await ReadSharedAsync(path));
            clock.Advance(window + TimeSpan.FromMinutes(1));                  // the old keys expire
            for (var i = 0; i < 20; i++) await AddAsync(store, $"new-{i}");  // passes 4KB: compaction drops the old keys
            var log = await ReadSharedAsync(path);
            Assert.DoesNotContain("old-", log);
            Assert.Contains("new-0", log);
            Assert.True(store.FileLength < 4096, $"{store.FileLength} bytes after compaction");
            await AddAsync(store, "after");                                   // appends go to the new file
            var replay = Assert.IsType<IdempotencyStore.Reservation.Replay>(store.Reserve("app", "new-3", "hash-new-3"));
            Assert.Equal("id-new-3", replay.Entry.Id);
            await store.DisposeAsync();

            var reopened = IdempotencyStore.Open(dir.FullName, window, clock, NullLogger.Instance, compactAt: 4096);
            foreach (var key in new[] { "new-0", "new-19", "after" })
                Assert.Equal("id-" + key, Assert.IsType<IdempotencyStore.Reservation.Replay>(reopened.Reserve("app", key, "hash-" + key)).Entry.Id);
            Assert.IsType<IdempotencyStore.Reservation.Owner>(reopened.Reserve("app", "old-1", "hash-old-1"));
            await reopened.DisposeAsync();
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public async Task A_compaction_fsyncs_the_directory_and_a_failure_after_its_rename_still_appends_to_the_renamed_file()
    {
        var dir = Directory.CreateTempSubdirectory("relay-idem-");
        try
        {
            var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-11-23T12:00:00Z"));
            var window = TimeSpan.FromHours(1);
            var path = Path.Combine(dir.FullName, IdempotencyStore.FileName);
            async Task AddAsync(IdempotencyStore store, string key)
            {
                Assert.IsType<IdempotencyStore.Reservation.Owner>(store.Reserve("app", key, "hash-" + key));
                await store.CompleteAsync(new IdempotencyStore.Entry("app", key, "hash-" + key, "id-" + key, 1, clock.GetUtcNow(), null),
                    ApiOutcome.Accepted("id-" + key, 1, null));
            }

            var store = IdempotencyStore.Open(dir.FullName, window, clock, NullLogger.Instance, compactAt: 4096);
            var syncs = new List<string>();
            // The first directory fsync after the rename fails (fault injection): the renamed file must stay the log.
            store.SyncDirectory = d => { syncs.Add(d); if (syncs.Count == 1) throw new IOException("injected fsync failure"); };
            for (var i = 0; i < 20; i++) await AddAsync(store, $"old-{i}");
            Assert.Empty(syncs);                                              // no compaction yet, no directory fsync
            clock.Advance(window + TimeSpan.FromMinutes(1));
            for (var i = 0; i < 20; i++) await AddAsync(store, $"new-{i}");  // passes 4KB: compaction, then the failing fsync
            Assert.True(store.FileLength < 4096, $"{store.FileLength} bytes after compaction");
            Assert.True(syncs.Count >= 2, $"{syncs.Count} directory fsync(s): the failed one is retried on the next append");
            Assert.All(syncs, d => Assert.Equal(dir.FullName, d));
            await AddAsync(store, "after");
            Assert.Contains("\"after\"", await ReadSharedAsync(path));      // written to the file now at the log's path
            await store.DisposeAsync();

            var reopened = IdempotencyStore.Open(dir.FullName, window, clock, NullLogger.Instance, compactAt: 4096);
            foreach (var key in new[] { "new-0", "new-19", "after" })
                Assert.Equal("id-" + key, Assert.IsType<IdempotencyStore.Reservation.Replay>(reopened.Reserve("app", key, "hash-" + key)).Entry.Id);
            await reopened.DisposeAsync();
        }
        finally { dir.Delete(true); }
    }

    private static async Task<string> ReadSharedAsync(string path)
    {
        await using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return await new StreamReader(f).ReadToEndAsync();
    }

    [Fact]
    public async Task Status_of_a_message_whose_accepted_event_failed_is_answered_from_the_spool()
    {
        await using var h = await ApiHarness.StartAsync();
        h.Events.FailAccepted = true;
        var id = await h.SubmitAsync(new { from = "a@app.test", to = new[] { "x@remote.test", "y@remote.test" }, text = "t" });

        using var mine = await h.SendAsync(HttpMethod.Get, $"/api/v1/messages/{id}", ApiHarness.AppToken);
        var text = await mine.Content.ReadAsStringAsync();
        Assert.True(mine.StatusCode == HttpStatusCode.OK, text);
        var view = JsonNode.Parse(text)!;
        Assert.Equal(id, view["id"]!.GetValue<string>());
        Assert.Equal(["x@remote.test", "y@remote.test"], view["recipients"]!.AsArray().Select(r => r!["address"]!.GetValue<string>()));
        Assert.All(view["recipients"]!.AsArray(), r => Assert.Equal("queued", r!["state"]!.GetValue<string>()));
        Assert.Equal("default", view["recipients"]![0]!["schedule"]!.GetValue<string>());

        using var theirs = await h.SendAsync(HttpMethod.Get, $"/api/v1/messages/{id}", ApiHarness.OtherToken);
        Assert.Equal(HttpStatusCode.NotFound, theirs.StatusCode);
    }

    [Fact]
    public async Task A_status_request_for_an_unreadable_message_never_quarantines_it()
    {
        await using var h = await ApiHarness.StartAsync();
        h.Events.FailAccepted = true;   // the status is answered from the spool's copy of the message
        var id = await h.SubmitAsync(Message);
        // Small messages live inside the journal: damage a byte of its record there (a stand-in for a read error).
        var needle = System.Text.Encoding.ASCII.GetBytes(id);
        var segment = Directory.EnumerateFiles(Path.Combine(h.Settings.Spool.Path, "journal"), "*.log")
            .First(f => File.ReadAllBytes(f).AsSpan().IndexOf(needle) >= 0);
        var at = File.ReadAllBytes(segment).AsSpan().IndexOf(needle) + needle.Length + 5;
        void FlipByte()
        {
            using var fs = new FileStream(segment, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
            fs.Position = at;
            var b = fs.ReadByte();
            fs.Position = at;
            fs.WriteByte((byte)(b ^ 0xFF));
        }
        FlipByte();

        using var unreadable = await h.SendAsync(HttpMethod.Get, $"/api/v1/messages/{id}", ApiHarness.AppToken);
        Assert.Equal(HttpStatusCode.NotFound, unreadable.StatusCode);
        Assert.NotNull(h.Spool.Find(id));                  // still queued: a read-only view quarantines nothing
        var quarantine = Path.Combine(h.Settings.Spool.Path, "quarantine");
        Assert.False(Directory.Exists(quarantine) && Directory.EnumerateFileSystemEntries(quarantine).Any());

        FlipByte();                                        // the problem goes away: the status is back
        using var readable = await h.SendAsync(HttpMethod.Get, $"/api/v1/messages/{id}", ApiHarness.AppToken);
        Assert.Equal(HttpStatusCode.OK, readable.StatusCode);
        Assert.Equal(id, (await ApiHarness.JsonAsync(readable))["id"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_503_for_a_full_queue_does_not_use_up_a_rate_slot()
    {
        var room = false;
        await using var h = await ApiHarness.StartAsync("""
            [api.client.limited]
            token = "limited-token"
            rate = "1/1h"
            rate-policy = "reject"
            """, queueHasRoom: _ => Volatile.Read(ref room));
        using (var full = await h.PostAsync(Message, "limited-token")) Assert.Equal(HttpStatusCode.ServiceUnavailable, full.StatusCode);
        Volatile.Write(ref room, true);
        await h.SubmitAsync(Message, "limited-token");                      // the one slot is still free
        using (var limited = await h.PostAsync(Message, "limited-token")) Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal(1, h.Spool.Count);
    }

    [Fact]
    public async Task A_rate_slot_is_not_taken_by_a_hold_message_refused_for_a_full_queue()
    {
        var room = false;
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-11-23T12:00:00Z"));
        await using var h = await ApiHarness.StartAsync("""
            [api.client.held]
            token = "held-token"
            rate = "1/1h"
            """, clock, queueHasRoom: _ => Volatile.Read(ref room));
        using (var full = await h.PostAsync(Message, "held-token")) Assert.Equal(HttpStatusCode.ServiceUnavailable, full.StatusCode);
        Volatile.Write(ref room, true);
        var id = await h.SubmitAsync(Message, "held-token");
        Assert.Null((await h.EnvelopeAsync(id)).NotBefore);                // got the free slot, not the next one
    }
}
