// MetricsTests: /metrics in Prometheus text format, and its values moving as mail flows through a real
// spool and scheduler; the text writer's histogram and escaping rules; the SLA window and its warning.
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Relay.Admin.Metrics;
using Relay.Admin.Tests.Harness;

namespace Relay.Admin.Tests;

public sealed class MetricsTests : IAsyncLifetime
{
    private AdminHarness _h = null!;

    public async Task InitializeAsync() => _h = await AdminHarness.StartAsync();
    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task Metrics_move_when_mail_flows()
    {
        var before = await _h.MetricsAsync();
        Assert.Equal(0, Scrape.Value(before, "relay_queue_depth{queue=\"default\"}"));
        Assert.Equal(0, Scrape.Value(before, "relay_spool_messages{state=\"live\"}"));
        Assert.Null(Scrape.Value(before, "relay_deliveries_total{queue=\"default\",result=\"delivered\"}"));

        // What the SMTP stage reports for one session with one refused and two accepted recipients.
        _h.Metrics.SessionOpened();
        _h.Metrics.RecipientAnswered(250);
        _h.Metrics.RecipientAnswered(250);
        _h.Metrics.RecipientAnswered(550);
        _h.Metrics.MessageAnswered(250);
        await _h.SendAsync("app@sender.test", "hold1@remote.test", "defer1@other.test");
        await _h.Agent.WaitHeldAsync("hold1@remote.test");
        await Eventually.TrueAsync(() => _h.Agent.Calls.Count == 2, "both recipients handed to the agent");
        _h.Clock.Advance(TimeSpan.FromSeconds(40));

        // defer1's attempt is counted when the agent answers, and its slot freed after the spool settles (an fsync):
        // wait for that, not only for the agent's call.
        var during = "";
        await Eventually.TrueAsync(async () =>
        {
            during = await _h.MetricsAsync();
            return Scrape.Value(during, "relay_queue_in_flight{queue=\"default\"}") == 1
                   && Scrape.Value(during, "relay_delivery_attempts_total{queue=\"default\",result=\"temporary\"}") == 1;
        }, "defer1's attempt settled");
        Assert.Equal(1, Scrape.Value(during, "relay_inbound_sessions_total"));
        Assert.Equal(1, Scrape.Value(during, "relay_inbound_sessions_active"));
        Assert.Equal(2, Scrape.Value(during, "relay_inbound_recipients_total{result=\"accepted\",reply_class=\"2xx\"}"));
        Assert.Equal(1, Scrape.Value(during, "relay_inbound_recipients_total{result=\"rejected\",reply_class=\"5xx\"}"));
        Assert.Equal(1, Scrape.Value(during, "relay_inbound_messages_total{result=\"accepted\",reply_class=\"2xx\"}"));
        Assert.Equal(2, Scrape.Value(during, "relay_queue_depth{queue=\"default\"}"));
        Assert.Equal(1, Scrape.Value(during, "relay_queue_in_flight{queue=\"default\"}"));
        Assert.Equal(40, Scrape.Value(during, "relay_queue_oldest_age_seconds{queue=\"default\"}"));
        Assert.Equal(1, Scrape.Value(during, "relay_delivery_attempts_total{queue=\"default\",result=\"temporary\"}"));
        Assert.Equal(1, Scrape.Value(during, "relay_spool_messages{state=\"live\"}"));
        Assert.True(Scrape.Value(during, "relay_spool_bytes") > 0);

        _h.Agent.Release("hold1@remote.test");
        await _h.IdleAsync();
        _h.Metrics.SessionClosed();
        var after = await _h.MetricsAsync();
        Assert.Equal(0, Scrape.Value(after, "relay_inbound_sessions_active"));
        Assert.Equal(1, Scrape.Value(after, "relay_queue_depth{queue=\"default\"}"));
        Assert.Equal(0, Scrape.Value(after, "relay_queue_in_flight{queue=\"default\"}"));
        Assert.Equal(1, Scrape.Value(after, "relay_delivery_attempts_total{queue=\"default\",result=\"delivered\"}"));
        Assert.Equal(1, Scrape.Value(after, "relay_deliveries_total{queue=\"default\",result=\"delivered\"}"));
        Assert.Equal(0, Scrape.Value(after, "relay_delivery_latency_seconds_bucket{queue=\"default\",le=\"30\"}"));
        Assert.Equal(1, Scrape.Value(after, "relay_delivery_latency_seconds_bucket{queue=\"default\",le=\"60\"}"));
        Assert.Equal(1, Scrape.Value(after, "relay_delivery_latency_seconds_bucket{queue=\"default\",le=\"+Inf\"}"));
        Assert.Equal(1, Scrape.Value(after, "relay_delivery_latency_seconds_count{queue=\"default\"}"));
        Assert.Equal(40, Scrape.Value(after, "relay_delivery_latency_seconds_sum{queue=\"default\"}"));
        Assert.Equal(40, Scrape.Value(after, "relay_sla_latency_seconds{queue=\"default\",quantile=\"0.95\"}"));
        Assert.Equal(3600, Scrape.Value(after, "relay_sla_seconds{queue=\"default\"}"));
        Assert.Equal(0, Scrape.Value(after, "relay_sla_violations_total{queue=\"default\"}"));
    }

    [Fact]
    public async Task Metrics_text_declares_every_family_once_with_help_and_type()
    {
        await _h.SendAsync("app@sender.test", "bounce@remote.test");
        await _h.IdleAsync();
        var text = await _h.MetricsAsync();
        using var response = await _h.Http.GetAsync("/metrics");
        Assert.Equal("text/plain", response.Content.Headers.ContentType!.MediaType);
        Assert.Contains("version=0.0.4", response.Content.Headers.ContentType.ToString());

        var types = text.Split('\n').Where(l => l.StartsWith("# TYPE ", StringComparison.Ordinal)).Select(l => l.Split(' ')[2]).ToList();
        Assert.Equal(types.Count, types.Distinct().Count());
        Assert.All(types, t => Assert.StartsWith("relay_", t));
        foreach (var name in new[]
                 {
                     "relay_inbound_sessions_total", "relay_inbound_messages_total", "relay_inbound_recipients_total", "relay_queue_depth",
                     "relay_queue_in_flight", "relay_queue_oldest_age_seconds", "relay_deliveries_total", "relay_delivery_attempts_total",
                     "relay_delivery_latency_seconds", "relay_dsn_sent_total", "relay_spool_messages", "relay_spool_bytes",
                 })
            Assert.Contains(name, types);
        foreach (var line in text.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')))
            Assert.Matches(@"^relay_[a-z_]+(\{[a-z_]+=""[^""]*""(,[a-z_]+=""[^""]*"")*\})? [-+0-9.eE]+(Inf)?$", line);
        Assert.Equal(1, Scrape.Value(text, "relay_deliveries_total{queue=\"default\",result=\"failed\"}"));
        Assert.Equal(1, Scrape.Value(text, "relay_dsn_sent_total{kind=\"failure\"}"));
        Assert.Equal(1, Scrape.Value(text, "relay_spool_messages{state=\"dead_letter\"}"));
    }

    [Fact]
    public void Histogram_buckets_are_cumulative_and_labels_are_escaped()
    {
        var family = new Family<Histogram>("relay_x_seconds", "Test.", ["queue"], () => new Histogram([1, 10]));
        family["a\"b\\c"].Observe(0.5);
        family["a\"b\\c"].Observe(1);
        family["a\"b\\c"].Observe(5);
        family["a\"b\\c"].Observe(100);
        var text = new PrometheusText().Histograms(family).ToString();
        Assert.Equal("""
            # HELP relay_x_seconds Test.
            # TYPE relay_x_seconds histogram
            relay_x_seconds_bucket{queue="a\"b\\c",le="1"} 2
            relay_x_seconds_bucket{queue="a\"b\\c",le="10"} 3
            relay_x_seconds_bucket{queue="a\"b\\c",le="+Inf"} 4
            relay_x_seconds_sum{queue="a\"b\\c"} 106.5
            relay_x_seconds_count{queue="a\"b\\c"} 4

            """.Replace("\r\n", "\n"), text);
    }

    [Fact]
    public async Task Counters_are_exact_under_concurrent_writers()
    {
        var metrics = new RelayMetrics();
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            for (var i = 0; i < 10_000; i++)
            {
                metrics.RecipientAnswered(250);
                metrics.RecipientFinal("q" + (i % 3), "delivered", TimeSpan.FromSeconds(2));
            }
        })));
        Assert.Equal(80_000, metrics.InboundRecipients["accepted", "2xx"].Value);
        Assert.Equal(80_000, metrics.DeliveryLatency.Children.Sum(c => c.Child.Count));
        Assert.Equal(80_000 * 2, metrics.DeliveryLatency.Children.Sum(c => c.Child.Sum), 3);
    }
}

public sealed class SlaTrackerTests
{
    private readonly FakeTimeProvider _clock = new(AdminHarness.Epoch);
    private readonly ListLogger _log = new();

    private SlaTracker Tracker(TimeSpan? window = null) =>
        new(_clock, new AdminOptions { SlaWindow = window ?? TimeSpan.FromMinutes(15), SlaEvaluateInterval = TimeSpan.Zero }, _log);

    [Fact]
    public void Percentiles_use_nearest_rank_over_the_window()
    {
        var sla = Tracker();
        for (var s = 1; s <= 100; s++) sla.Record("urgent", TimeSpan.FromSeconds(s));
        var p = sla.Percentiles("urgent")!;
        Assert.Equal(new LatencyPercentiles(50, 95, 99, 100), p);
        Assert.Null(sla.Percentiles("bulk"));
    }

    [Fact]
    public void Samples_leave_the_window_as_time_passes()
    {
        var sla = Tracker(TimeSpan.FromMinutes(10));
        sla.Record("urgent", TimeSpan.FromSeconds(600));
        _clock.Advance(TimeSpan.FromMinutes(6));
        sla.Record("urgent", TimeSpan.FromSeconds(10));
        Assert.Equal(600, sla.Percentiles("urgent")!.P99);
        _clock.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(new LatencyPercentiles(10, 10, 10, 1), sla.Percentiles("urgent"));
        _clock.Advance(TimeSpan.FromMinutes(10));
        Assert.Null(sla.Percentiles("urgent"));
    }

    [Fact]
    public void Late_deliveries_count_as_violations_and_p95_over_target_logs_one_warning_a_minute()
    {
        var sla = Tracker();
        sla.SetTargets(new Dictionary<string, TimeSpan> { ["urgent"] = TimeSpan.FromMinutes(5) });
        for (var i = 0; i < 18; i++) sla.Record("urgent", TimeSpan.FromSeconds(30));
        Assert.Empty(_log.Lines);
        sla.Record("urgent", TimeSpan.FromMinutes(9));
        sla.Record("urgent", TimeSpan.FromMinutes(8));   // 2 of 20 late: p95 is now a late one
        sla.Record("urgent", TimeSpan.FromHours(2), delivered: false);   // expired: a violation, not a delivery time
        Assert.Equal(3, sla.Violations("urgent"));
        Assert.Equal(20, sla.Percentiles("urgent")!.Samples);
        var warning = Assert.Single(_log.Lines);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Equal(7002, warning.Id.Id);
        Assert.Contains("queue urgent", warning.Text);
        Assert.Contains("over the SLA of 300s", warning.Text);

        sla.Record("urgent", TimeSpan.FromMinutes(7));
        Assert.Single(_log.Lines);   // rate-limited
        _clock.Advance(TimeSpan.FromMinutes(1));
        sla.Record("urgent", TimeSpan.FromMinutes(7));
        Assert.Equal(2, _log.Lines.Count);
    }

    [Fact]
    public void A_queue_is_held_to_the_strictest_schedule_feeding_it()
    {
        var targets = SlaTracker.TargetsFrom(
        [
            new Relay.Config.Settings.ScheduleSettings("a", "fast", [TimeSpan.FromMinutes(1)], [], new Relay.Config.Settings.Expiry.Attempts(3), TimeSpan.FromMinutes(10)),
            new Relay.Config.Settings.ScheduleSettings("b", "fast", [TimeSpan.FromMinutes(1)], [], new Relay.Config.Settings.Expiry.Attempts(3), TimeSpan.FromMinutes(5)),
            new Relay.Config.Settings.ScheduleSettings("c", "slow", [TimeSpan.FromMinutes(1)], [], new Relay.Config.Settings.Expiry.Attempts(3), null),
        ]);
        Assert.Equal(TimeSpan.FromMinutes(5), targets["fast"]);
        Assert.False(targets.ContainsKey("slow"));
    }
}
