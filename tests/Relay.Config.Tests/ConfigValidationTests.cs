using Relay.Config.Settings;
using static Relay.Config.Tests.ConfigFixtures;

namespace Relay.Config.Tests;

public class ConfigValidationTests
{
    [Fact]
    public void Minimal_config_loads_with_documented_defaults()
    {
        var s = LoadOk(MinimalQueue);
        Assert.Equal(25L * 1024 * 1024, s.Session.MaxMessageSize);
        Assert.Equal(100, s.Session.MaxRecipients);
        Assert.Equal(TimeSpan.FromMinutes(5), s.Session.Timeout);
        Assert.Equal(1000, s.Session.MaxConnections);
        Assert.Equal(50, s.Session.MaxReceivedHeaders);
        Assert.Equal(0, s.Session.Priority.Default);
        Assert.Null(s.Session.Priority.HeaderFrom);
        Assert.Equal(TimeSpan.FromDays(7), s.Spool.Retention);
        Assert.Equal(25, s.Delivery.Port);
        Assert.Equal(TimeSpan.FromSeconds(30), s.Delivery.ConnectTimeout);
        Assert.Empty(s.Resolver.Nameservers);
        Assert.Equal(TimeSpan.FromSeconds(5), s.Resolver.Timeout);
        Assert.Equal("Mail Delivery System", s.Dsn.FromName);
        Assert.Equal(8025, s.Admin.Bind.Port);

        var def = s.Queue.Schedules["default"];
        Assert.Equal(ConfigLoader.DefaultRetry, def.Retry);
        Assert.Equal(ConfigLoader.DefaultNotify, def.Notify);
        Assert.Equal(new Expiry.Ttl(TimeSpan.FromDays(5)), def.Expiry);
        Assert.Equal(TimeSpan.FromMinutes(1), s.Queue.VirtualQueues["default"].PriorityAging);
        Assert.Null(s.Queue.VirtualQueues["default"].MaxSize);
    }

    [Fact]
    public void Every_section_and_key_of_the_design_is_read()
    {
        var s = LoadOk("""
            [server]
            hostname = "relay.example.test"
            [server.listener.smtp]
            bind = ["127.0.0.1:2525", "[::1]:2526"]
            require-auth = true
            [session]
            max-message-size = "10MB"
            max-recipients = 7
            timeout = "90s"
            max-connections = 12
            reverse-dns = true
            max-received-headers = 30
            max-errors = 4
            [session.relay]
            networks = ["10.0.0.0/8", "192.0.2.7"]
            users = { "app1" = "s3cret" }
            [session.priority]
            mt-priority-from = ["10.1.0.0/16"]
            default = -2
            header-from = ["10.2.0.0/16"]
            [local]
            domains = ["Example.TEST"]
            [spool]
            path = "/var/spool/relay"
            retention = "2d"
            [resolver]
            nameservers = ["127.0.0.1:5353", "127.0.0.2"]
            timeout = "2s"
            [delivery]
            port = 2526
            connect-timeout = "3s"
            [dsn]
            from-name = "Postmaster"
            from-address = "bounces@relay.example.test"
            [lists]
            vip = ["a@example.test"]
            [admin]
            bind = "127.0.0.1:9025"
            token = "t0ken"
            """ + "\n" + MinimalQueue.Replace("queue-name = \"default\"", "queue-name = \"default\"\nsla = \"5m\"") + "\n[queue.virtual.bulk]\nthreads-per-node = 2\npriority-aging = \"0s\"\nmax-size = 1000\n");
        Assert.Equal("relay.example.test", s.Server.Hostname);
        var listener = Assert.Single(s.Server.Listeners);
        Assert.Equal("smtp", listener.Name);
        Assert.Equal(2, listener.Bind.Count);
        Assert.Equal(2526, listener.Bind[1].Port);
        Assert.True(listener.RequireAuth);
        Assert.Equal(10L << 20, s.Session.MaxMessageSize);
        Assert.Equal(7, s.Session.MaxRecipients);
        Assert.Equal(TimeSpan.FromSeconds(90), s.Session.Timeout);
        Assert.Equal(12, s.Session.MaxConnections);
        Assert.True(s.Session.ReverseDns);
        Assert.Equal(30, s.Session.MaxReceivedHeaders);
        Assert.Equal(4, s.Session.MaxErrors);
        Assert.Equal(2, s.Session.Relay.Networks.Count);
        Assert.True(s.Session.Relay.Networks[1].Contains(System.Net.IPAddress.Parse("192.0.2.7")));
        Assert.Equal("s3cret", s.Session.Relay.Users["app1"]);
        Assert.Equal(-2, s.Session.Priority.Default);
        Assert.Single(s.Session.Priority.HeaderFrom!);
        Assert.True(s.Local.IsLocal("example.test"));
        Assert.Equal("/var/spool/relay", s.Spool.Path);
        Assert.Equal(TimeSpan.FromDays(2), s.Spool.Retention);
        Assert.Equal(5353, s.Resolver.Nameservers[0].Port);
        Assert.Equal(53, s.Resolver.Nameservers[1].Port);
        Assert.Equal(2526, s.Delivery.Port);
        Assert.Equal("bounces@relay.example.test", s.Dsn.FromAddress);
        Assert.True(s.Lists.Contains("vip", "A@EXAMPLE.TEST"));
        Assert.Equal(9025, s.Admin.Bind.Port);
        Assert.Equal("t0ken", s.Admin.Token);
        Assert.Equal(TimeSpan.FromMinutes(5), s.Queue.Schedules["default"].Sla);
        Assert.Equal(TimeSpan.Zero, s.Queue.VirtualQueues["bulk"].PriorityAging);
        Assert.Equal(1000, s.Queue.VirtualQueues["bulk"].MaxSize);
    }

    [Fact]
    public void Unknown_keys_are_errors_with_line_and_full_key()
    {
        var errors = LoadErrors("""
            [server]
            hostnme = "x"
            [sesion]
            a = 1
            [session]
            max-recipient = 5
            """ + "\n" + MinimalQueue.Replace("threads-per-node = 5", "threads-per-node = 5\nthreads = 9"));
        AssertError(errors, 2, "server.hostnme", "unknown key");
        AssertError(errors, 3, "sesion", "unknown key");
        AssertError(errors, 6, "session.max-recipient", "unknown key");
        AssertError(errors, 22, "queue.virtual.urgent.threads", "unknown key");
    }

    [Fact]
    public void Unknown_key_inside_a_strategy_rule_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace("{ if = \"priority >= 6\", then = \"'urgent'\" }",
            "{ if = \"priority >= 6\", than = \"'urgent'\" }"));
        AssertError(errors, 2, "queue.strategy.schedule[0].than", "unknown key");
        AssertError(errors, 2, "queue.strategy.schedule[0]", "needs 'then'");
    }

    [Theory]
    [InlineData("timeout = \"5 minutes\"", "session.timeout", "not a duration")]
    [InlineData("timeout = 300", "session.timeout", "not a duration")]
    [InlineData("max-message-size = \"25 MiB\"", "session.max-message-size", "not a size")]
    [InlineData("max-recipients = \"100\"", "session.max-recipients", "expected an integer")]
    [InlineData("max-recipients = 0", "session.max-recipients", "out of range")]
    [InlineData("reverse-dns = \"yes\"", "session.reverse-dns", "expected true or false")]
    public void Malformed_session_values_name_line_and_key(string line, string key, string message)
    {
        var errors = LoadErrors($"# comment\n[session]\n{line}\n{MinimalQueue}");
        AssertError(errors, 3, key, message);
    }

    [Fact]
    public void Malformed_addresses_and_networks_are_errors()
    {
        var errors = LoadErrors("""
            [server.listener.smtp]
            bind = ["127.0.0.1"]
            [session.relay]
            networks = ["10.0.0.0/33", "not-an-ip"]
            [resolver]
            nameservers = ["dns.example:53"]
            [admin]
            bind = "localhost:8025"
            """ + "\n" + MinimalQueue);
        AssertError(errors, 2, "server.listener.smtp.bind", "not an ip:port");
        AssertError(errors, 4, "session.relay.networks", "'10.0.0.0/33' is not an address or CIDR");
        AssertError(errors, 4, "session.relay.networks", "'not-an-ip'");
        AssertError(errors, 6, "resolver.nameservers", "not an ip:port");
        AssertError(errors, 8, "admin.bind", "not an ip:port");
    }

    [Fact]
    public void Priority_default_outside_rfc6710_range_is_an_error()
    {
        var errors = LoadErrors("[session.priority]\ndefault = 10\n" + MinimalQueue);
        AssertError(errors, 2, "session.priority.default", "out of range -9..9");
    }

    [Fact]
    public void Both_expire_and_max_attempts_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace("expire = \"1h\"", "expire = \"1h\"\nmax-attempts = 5"));
        AssertError(errors, 10, "queue.schedule.urgent.max-attempts", "cannot set both 'expire' and 'max-attempts'");
    }

    [Fact]
    public void Neither_expire_nor_max_attempts_defaults_to_five_days()
    {
        var s = LoadOk(MinimalQueue.Replace("expire = \"1h\"", ""));
        Assert.Equal(new Expiry.Ttl(TimeSpan.FromDays(5)), s.Queue.Schedules["urgent"].Expiry);
    }

    [Fact]
    public void Max_attempts_alone_is_an_attempt_expiry()
    {
        var s = LoadOk(MinimalQueue.Replace("expire = \"1h\"", "max-attempts = 4"));
        Assert.Equal(new Expiry.Attempts(4), s.Queue.Schedules["urgent"].Expiry);
    }

    [Fact]
    public void Queue_name_naming_no_virtual_queue_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace("queue-name = \"urgent\"", "queue-name = \"fast\""));
        AssertError(errors, 6, "queue.schedule.urgent.queue-name", "virtual queue 'fast' is not defined");
    }

    [Fact]
    public void Empty_retry_list_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace("retry = [\"30s\", \"1m\"]", "retry = []"));
        AssertError(errors, 7, "queue.schedule.urgent.retry", "at least one interval");
    }

    [Fact]
    public void Malformed_retry_entry_names_the_retry_key()
    {
        var errors = LoadErrors(MinimalQueue.Replace("retry = [\"30s\", \"1m\"]", "retry = [\"30s\", \"soon\"]"));
        AssertError(errors, 7, "queue.schedule.urgent.retry", "'soon' is not a duration");
    }

    [Fact]
    public void Then_literal_naming_no_schedule_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace("then = \"'urgent'\"", "then = \"'urgnet'\""));
        AssertError(errors, 2, "queue.strategy.schedule[0].then", "schedule 'urgnet' is not defined");
    }

    [Fact]
    public void Else_literal_naming_no_schedule_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace("{ else = \"'default'\" }", "{ else = \"'other'\" }"));
        AssertError(errors, 3, "queue.strategy.schedule[1].else", "schedule 'other' is not defined");
    }

    [Fact]
    public void Strategy_without_else_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace(",\n             { else = \"'default'\" }", ""));
        AssertError(errors, 2, "queue.strategy.schedule", "no 'else' rule");
    }

    [Fact]
    public void Else_before_the_last_rule_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace(
            "schedule = [ { if = \"priority >= 6\", then = \"'urgent'\" },\n             { else = \"'default'\" } ]",
            "schedule = [ { else = \"'default'\" },\n             { if = \"priority >= 6\", then = \"'urgent'\" } ]"));
        AssertError(errors, 2, "queue.strategy.schedule[0]", "'else' must be the last rule");
    }

    [Theory]
    [InlineData("priority >= ", "does not parse")]
    [InlineData("prio >= 6", "unknown variable 'prio'")]
    [InlineData("is_vip(rcpt)", "unknown function 'is_vip'")]
    [InlineData("contains(rcpt)", "takes 2 argument(s), not 1")]
    [InlineData("in_list('gold', rcpt)", "no list named 'gold'")]
    [InlineData("matches('([a-z', rcpt)", "bad regular expression")]
    [InlineData("priority == 'high'", "cannot be evaluated")]
    public void Bad_expressions_are_load_errors_naming_the_rule(string expression, string message)
    {
        var errors = LoadErrors(MinimalQueue.Replace("priority >= 6", expression));
        AssertError(errors, 2, "queue.strategy.schedule[0].if", message);
    }

    [Fact]
    public void Then_that_is_not_a_name_expression_is_an_error()
    {
        var errors = LoadErrors(MinimalQueue.Replace("then = \"'urgent'\"", "then = \"priority + \""));
        AssertError(errors, 2, "queue.strategy.schedule[0].then", "does not parse");
    }

    [Fact]
    public void Else_must_be_a_literal()
    {
        var errors = LoadErrors(MinimalQueue.Replace("{ else = \"'default'\" }", "{ else = \"if(priority > 0, 'urgent', 'default')\" }"));
        AssertError(errors, 3, "queue.strategy.schedule[1].else", "must be a quoted schedule name");
    }

    [Fact]
    public void Toml_syntax_error_names_the_line()
    {
        var errors = LoadErrors("[server]\nhostname = \n" + MinimalQueue);
        Assert.Contains(errors, e => e.Line == 2 && e.Message.StartsWith("TOML syntax", StringComparison.Ordinal));
    }

    [Fact]
    public void Missing_queue_sections_are_errors()
    {
        var errors = LoadErrors("[server]\nhostname = \"x\"\n");
        AssertError(errors, 1, "queue", "missing");
        errors = LoadErrors("[queue.virtual.a]\nthreads-per-node = 1\n");
        Assert.Contains(errors, e => e.Key == "queue.schedule" && e.Message.Contains("missing"));
        Assert.Contains(errors, e => e.Key == "queue.strategy" && e.Message.Contains("missing"));
    }

    [Fact]
    public void All_errors_are_reported_in_one_run()
    {
        var errors = LoadErrors("[session]\ntimeout = \"x\"\nmax-recipients = -1\nfoo = 1\n" +
            MinimalQueue.Replace("queue-name = \"urgent\"", "queue-name = \"nope\"").Replace("retry = [\"30s\", \"1m\"]", "retry = []"));
        Assert.True(errors.Count >= 5, string.Join("\n", errors));
    }

    [Fact]
    public void Error_text_is_file_line_key_message()
    {
        var errors = LoadErrors("[session]\nfoo = 1\n" + MinimalQueue);
        Assert.Equal("test.toml:2: session.foo: unknown key", errors.Single().ToString());
    }

    [Fact]
    public void Implicit_tls_without_certificate_and_missing_pem_files_are_errors()
    {
        var errors = LoadErrors("[server.listener.tls]\nbind = [\"127.0.0.1:465\"]\nimplicit-tls = true\n" +
            "[server.listener.sub]\nbind = [\"127.0.0.1:587\"]\ntls = { certificate = \"nope.pem\", key = \"nope.key\" }\n" + MinimalQueue);
        AssertError(errors, 3, "server.listener.tls.implicit-tls", "needs a tls");
        AssertError(errors, 6, "server.listener.sub.tls.certificate", "does not exist");
        AssertError(errors, 6, "server.listener.sub.tls.key", "does not exist");
    }

    [Fact]
    public void List_from_file_is_read_relative_to_the_base_directory()
    {
        var dir = Directory.CreateTempSubdirectory("relay-config-");
        try
        {
            File.WriteAllLines(Path.Combine(dir.FullName, "vip.txt"), ["# VIPs", "boss@example.test", "", "  cfo@example.test  "]);
            var s = LoadOk("[lists]\nvip = { file = \"vip.txt\" }\n" + MinimalQueue, dir.FullName);
            Assert.True(s.Lists.Contains("vip", "CFO@example.test"));
            Assert.True(s.Lists.Contains("vip", "boss@example.test"));
            Assert.False(s.Lists.Contains("vip", "# VIPs"));
            var errors = LoadErrors("[lists]\nvip = { file = \"missing.txt\" }\n" + MinimalQueue, dir.FullName);
            AssertError(errors, 2, "lists.vip.file", "cannot read");
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [Fact]
    public void Duration_and_size_grammar()
    {
        Assert.Equal(TimeSpan.FromMilliseconds(500), ConfigLoader.ParseDuration("500ms"));
        Assert.Equal(TimeSpan.FromSeconds(30), ConfigLoader.ParseDuration("30s"));
        Assert.Equal(TimeSpan.FromMinutes(90), ConfigLoader.ParseDuration("1h30m"));
        Assert.Equal(TimeSpan.FromDays(4), ConfigLoader.ParseDuration("4d"));
        Assert.Throws<FormatException>(() => ConfigLoader.ParseDuration("4 days"));
        Assert.Throws<FormatException>(() => ConfigLoader.ParseDuration(""));
        Assert.Equal("1m30s", DurationText.Format(TimeSpan.FromSeconds(90)));
        Assert.Equal("5d", DurationText.Format(TimeSpan.FromDays(5)));
        var s = LoadOk("[session]\nmax-message-size = \"512KB\"\n" + MinimalQueue);
        Assert.Equal(512 * 1024, s.Session.MaxMessageSize);
        s = LoadOk("[session]\nmax-message-size = 1000\n" + MinimalQueue);
        Assert.Equal(1000, s.Session.MaxMessageSize);
    }

    [Fact]
    public void Retry_delay_repeats_the_last_interval()
    {
        var urgent = LoadOk(MinimalQueue).Queue.Schedules["urgent"];
        Assert.Equal(TimeSpan.FromSeconds(30), urgent.RetryDelay(1));
        Assert.Equal(TimeSpan.FromMinutes(1), urgent.RetryDelay(2));
        Assert.Equal(TimeSpan.FromMinutes(1), urgent.RetryDelay(7));
    }
}
