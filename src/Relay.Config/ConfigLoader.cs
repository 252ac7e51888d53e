// ConfigLoader: TOML text → validated RelaySettings. Every problem is collected (not thrown)
// so the operator sees them all in one run, each as file:line: key: message.
using System.Net;
using Relay.Config.Settings;
using Relay.Config.Strategy;
using Relay.Config.Toml;

namespace Relay.Config;

/// <summary>One problem in a config file, printed as <c>file:line: key: message</c>.</summary>
public sealed record ConfigError(string File, int Line, string Key, string Message)
{
    public override string ToString() => $"{File}:{Line}: {Key}: {Message}";
}

/// <summary>Either settings or the full list of what is wrong (never both).</summary>
public sealed record ConfigLoadResult(RelaySettings? Settings, IReadOnlyList<ConfigError> Errors)
{
    public bool Ok => Settings is not null && Errors.Count == 0;
}

/// <summary>Reads a TOML config file into validated <see cref="RelaySettings"/>, collecting every error.</summary>
public static partial class ConfigLoader
{
    /// <summary>Schedule defaults for keys a <c>[queue.schedule.*]</c> leaves out (documented in config/config.toml).</summary>
    public static readonly IReadOnlyList<TimeSpan> DefaultRetry =
        [.. new[] { "2m", "5m", "10m", "15m", "30m", "1h", "2h" }.Select(ParseDuration)];
    public static readonly IReadOnlyList<TimeSpan> DefaultNotify = [TimeSpan.FromDays(1), TimeSpan.FromDays(3)];
    public static readonly TimeSpan DefaultExpire = TimeSpan.FromDays(5);
    public const int DefaultThreadsPerNode = 25;

    /// <summary>Environment variable that overrides <c>[admin] token</c>.</summary>
    public const string AdminTokenVariable = "RELAY_ADMIN_TOKEN";

    /// <summary>Loads and validates the file at <paramref name="path"/>. Relative paths inside it resolve against the current directory.</summary>
    public static ConfigLoadResult LoadFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new(null, [new ConfigError(path, 0, "", $"cannot read config file: {e.Message}")]);
        }
        return Parse(text, path);
    }

    /// <summary>Parses TOML text; relative paths in it resolve against <paramref name="baseDirectory"/> (default: the current directory).</summary>
    public static ConfigLoadResult Parse(string text, string path = "config.toml", string? baseDirectory = null)
    {
        var errors = new ErrorSink(path);
        var (rootNode, syntaxErrors) = TomlReader.Read(text, path);
        foreach (var (line, message) in syntaxErrors)
            errors.Add(line, "", $"TOML syntax: {message}");
        if (errors.Errors.Count > 0) return new(null, errors.Errors);

        var root = new Section(rootNode, "", errors);
        var baseDir = baseDirectory ?? Directory.GetCurrentDirectory();
        var settings = new Builder(root, baseDir, path).Build();
        return errors.Errors.Count > 0 ? new(null, errors.Errors) : new(settings, []);
    }

    /// <summary>A rate "count/duration" such as "100/1m" or "5/s" (a bare unit means one of it).</summary>
    public static bool TryParseRate(string text, out int count, out TimeSpan window)
    {
        window = TimeSpan.Zero;
        var slash = text.IndexOf('/');
        if (slash <= 0 || !int.TryParse(text.AsSpan(0, slash).Trim(), System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out count) || count <= 0)
        {
            count = 0;
            return false;
        }
        var duration = text[(slash + 1)..].Trim();
        if (duration.Length > 0 && !char.IsAsciiDigit(duration[0])) duration = "1" + duration;
        return Section.TryParseDuration(duration, out window) && window > TimeSpan.Zero;
    }

    /// <summary>Parses a duration string ("30s", "2m", "1h30m"); throws <see cref="FormatException"/> when invalid.</summary>
    public static TimeSpan ParseDuration(string text) =>
        Section.TryParseDuration(text, out var d) ? d : throw new FormatException($"'{text}' is not a duration");

    private sealed partial class Builder(Section root, string baseDir, string path)
    {
        private static readonly IPNetwork[] Loopback = [IPNetwork.Parse("127.0.0.0/8"), IPNetwork.Parse("::1/128")];

        public RelaySettings? Build()
        {
            var server = ReadServer(root.Table("server"));
            var session = ReadSession(root.Table("session"));
            var local = ReadLocal(root.Table("local"));
            var spool = ReadSpool(root.Table("spool"));
            var resolver = ReadResolver(root.Table("resolver"));
            var lists = ReadLists(root.Table("lists"));
            var environment = new StrategyEnvironment(local, lists);
            var delivery = ReadDelivery(root.Table("delivery"), environment, lists);
            var admin = ReadAdmin(root.Table("admin"));
            var dsn = ReadDsn(root.Table("dsn"), server.Hostname);
            var queue = ReadQueue(root.Table("queue"), environment, lists);
            var api = ReadApi(root.Table("api"), root.Table("templates"), session, spool);
            root.ReportUnknownKeys();
            if (queue is null || delivery is null) return null;
            return new RelaySettings
            {
                SourcePath = path, Server = server, Session = session, Local = local, Spool = spool,
                Resolver = resolver, Delivery = delivery, Queue = queue, Lists = lists, Admin = admin, Dsn = dsn,
                Api = api,
            };
        }

        private string ResolvePath(string p) => Path.IsPathRooted(p) ? p : Path.GetFullPath(Path.Combine(baseDir, p));

        private ServerSettings ReadServer(Section? s)
        {
            if (s is null) return new ServerSettings(Dns.GetHostName(), []);
            var hostname = s.String("hostname") ?? Dns.GetHostName();
            var listeners = new List<ListenerSettings>();
            if (s.Table("listener") is { } listenerTable)
            {
                foreach (var (name, l) in listenerTable.NamedTables())
                {
                    var binds = new List<IPEndPoint>();
                    var bindList = l.StringList("bind");
                    if (bindList is null or { Count: 0 }) l.Error("bind", "a listener needs at least one \"ip:port\" to bind");
                    foreach (var b in bindList ?? [])
                        if (l.ParseEndpoint("bind", b, null) is { } ep) binds.Add(ep);
                    TlsSettings? tls = null;
                    if (l.Table("tls") is { } t)
                    {
                        var cert = t.String("certificate");
                        var key = t.String("key");
                        if (cert is null) t.Error("certificate", "required: path of the PEM certificate chain");
                        if (key is null) t.Error("key", "required: path of the PEM private key");
                        if (cert is not null && !File.Exists(ResolvePath(cert))) t.Error("certificate", $"file '{cert}' does not exist");
                        if (key is not null && !File.Exists(ResolvePath(key))) t.Error("key", $"file '{key}' does not exist");
                        if (cert is not null && key is not null) tls = new TlsSettings(ResolvePath(cert), ResolvePath(key));
                        t.ReportUnknownKeys();
                    }
                    var implicitTls = l.Bool("implicit-tls", false);
                    if (implicitTls && tls is null) l.Error("implicit-tls", "needs a tls = { certificate, key } on this listener");
                    var requireAuth = l.Bool("require-auth", false);
                    l.ReportUnknownKeys();
                    listeners.Add(new ListenerSettings(name, binds, tls, implicitTls, requireAuth));
                }
            }
            var shutdownTimeout = ReadShutdownTimeout(s);
            s.ReportUnknownKeys();
            return new ServerSettings(hostname, listeners) { ShutdownTimeout = shutdownTimeout };
        }

        /// <summary><c>[server] shutdown-timeout</c>: how long SIGTERM waits for sessions and deliveries in flight.</summary>
        private static TimeSpan ReadShutdownTimeout(Section s)
        {
            var timeout = s.Duration("shutdown-timeout", ServerSettings.DefaultShutdownTimeout);
            if (timeout < TimeSpan.Zero) s.Error("shutdown-timeout", "must not be negative");
            return timeout;
        }

        private SessionSettings ReadSession(Section? s)
        {
            var d = new SessionSettings();
            if (s is null) return d;
            var relay = d.Relay;
            if (s.Table("relay") is { } r)
            {
                var users = new Dictionary<string, string>(StringComparer.Ordinal);
                if (r.Table("users") is { } u)
                {
                    foreach (var name in u.Keys.ToList())
                        if (u.String(name) is { } secret) users[name] = secret;
                    u.ReportUnknownKeys();
                }
                relay = new RelayControlSettings { Networks = r.Networks("networks") ?? relay.Networks, Users = users };
                r.ReportUnknownKeys();
            }
            var priority = d.Priority;
            if (s.Table("priority") is { } p)
            {
                priority = new PrioritySettings
                {
                    MtPriorityFrom = p.Networks("mt-priority-from") ?? priority.MtPriorityFrom,
                    Default = (int)p.Integer("default", 0, -9, 9),
                    HeaderFrom = p.Networks("header-from"),
                };
                p.ReportUnknownKeys();
            }
            var result = new SessionSettings
            {
                MaxMessageSize = s.Size("max-message-size", d.MaxMessageSize),
                MaxRecipients = (int)s.Integer("max-recipients", d.MaxRecipients, 1, 100_000),
                Timeout = s.Duration("timeout", d.Timeout),
                MaxConnections = (int)s.Integer("max-connections", d.MaxConnections, 1, 1_000_000),
                ReverseDns = s.Bool("reverse-dns", d.ReverseDns),
                MaxReceivedHeaders = (int)s.Integer("max-received-headers", d.MaxReceivedHeaders, 1, 1000),
                MaxErrors = (int)s.Integer("max-errors", d.MaxErrors, 1, 1000),
                Relay = relay,
                Priority = priority,
            };
            s.ReportUnknownKeys();
            return result;
        }

        private LocalSettings ReadLocal(Section? s)
        {
            if (s is null) return new LocalSettings([]);
            var domains = s.StringList("domains") ?? [];
            s.ReportUnknownKeys();
            return new LocalSettings(domains.Select(x => x.Trim().ToLowerInvariant()).ToList());
        }

        private SpoolSettings ReadSpool(Section? s)
        {
            var p = s?.String("path") ?? "spool";
            var retention = s?.Duration("retention", TimeSpan.FromDays(7)) ?? TimeSpan.FromDays(7);
            s?.ReportUnknownKeys();
            return new SpoolSettings(ResolvePath(p), retention);
        }

        private ResolverSettings ReadResolver(Section? s)
        {
            var servers = new List<IPEndPoint>();
            foreach (var ns in s?.StringList("nameservers") ?? [])
                if (s!.ParseEndpoint("nameservers", ns, 53) is { } ep) servers.Add(ep);
            var timeout = s?.Duration("timeout", TimeSpan.FromSeconds(5)) ?? TimeSpan.FromSeconds(5);
            s?.ReportUnknownKeys();
            return new ResolverSettings(servers, timeout);
        }

        private DeliverySettings? ReadDelivery(Section? s, StrategyEnvironment environment, NamedLists lists)
        {
            var port = (int)(s?.Integer("port", 25, 1, 65535) ?? 25);
            var connect = s?.Duration("connect-timeout", TimeSpan.FromSeconds(30)) ?? TimeSpan.FromSeconds(30);
            var hold = s?.Bool("hold", false) ?? false;
            var d = new DeliverySettings(port, connect) { Hold = hold };
            if (s is null) return d;
            var rates = new Dictionary<string, (int, TimeSpan)>(StringComparer.OrdinalIgnoreCase);
            if (s.Table("rate") is { } r)
            {
                foreach (var domain in r.Keys.ToList())
                {
                    var text = r.String(domain);
                    if (text is null) continue;
                    if (TryParseRate(text, out var count, out var window))
                    {
                        rates[domain] = (count, window);
                        continue;
                    }
                    r.Error(domain, $"'{text}' is not a rate like \"100/1m\" (count/duration)");
                }
                r.ReportUnknownKeys();
            }
            var smartHosts = new Dictionary<string, SmartHostSettings>(StringComparer.Ordinal);
            if (s.Table("smart-host") is { } hosts)
            {
                foreach (var (name, h) in hosts.NamedTables())
                {
                    var host = h.String("host");
                    if (host is null) h.Error("host", "required: the smart host's name or IP address");
                    var hostPort = (int)h.Integer("port", 587, 1, 65535);
                    var tls = h.String("tls") ?? "starttls";
                    if (tls is not ("starttls" or "implicit" or "opportunistic" or "none"))
                        h.Error("tls", $"'{tls}' is not one of starttls, implicit, opportunistic, none");
                    var user = h.String("username");
                    var password = h.String("password");
                    h.ReportUnknownKeys();
                    if (name == DeliveryRoute.Mx)
                        hosts.Error(name, "'mx' is reserved: route uses it for MX delivery; name the smart host something else");
                    else if (host is not null) smartHosts[name] = new SmartHostSettings(host, hostPort, tls, user, password);
                }
            }
            DeliveryRoute? route = null;
            var routeOk = true;
            if (s.Has("route"))
            {
                // 'mx' is normal MX delivery; any other name is a [delivery.smart-host.NAME]. No 'else' means 'mx'.
                var rules = ReadRules(s, "route", "route", environment, lists,
                    name => name == DeliveryRoute.Mx || smartHosts.ContainsKey(name) ? name : null,
                    "'mx' or a [delivery.smart-host.*]", "route name", "mx",
                    name => $"smart host '{name}' is not defined (add [delivery.smart-host.{name}], or use 'mx' for MX delivery)",
                    DeliveryRoute.Mx, DeliveryRoute.Unavailable);
                if (rules is null) routeOk = false;
                else route = new DeliveryRoute(rules);
            }
            d = d with
            {
                CommandTimeout = s.Duration("command-timeout", d.CommandTimeout),
                MaxConnectionsPerHost = (int)s.Integer("max-connections-per-host", d.MaxConnectionsPerHost, 1, 10_000),
                ConnectionWait = s.Duration("connection-wait", d.ConnectionWait),
                MaxMessagesPerConnection = (int)s.Integer("max-messages-per-connection", d.MaxMessagesPerConnection, 1, 1_000_000),
                IdleTimeout = s.Duration("idle-timeout", d.IdleTimeout),
                RequireTls = (s.StringList("require-tls") ?? []).Select(x => x.ToLowerInvariant()).ToList(),
                Rates = rates,
                Route = route,
                SmartHosts = smartHosts,
                DnsCacheMaxTtl = s.Duration("dns-cache-max-ttl", d.DnsCacheMaxTtl),
                DnsNegativeTtl = s.Duration("dns-negative-ttl", d.DnsNegativeTtl),
            };
            s.ReportUnknownKeys();
            return routeOk ? d : null;
        }

        private NamedLists ReadLists(Section? s)
        {
            if (s is null) return NamedLists.Empty;
            var lists = new Dictionary<string, IEnumerable<string>>();
            foreach (var name in s.Keys.ToList())
            {
                var raw = s.Raw(name);
                if (raw is TomlTableNode)
                {
                    var t = s.Table(name)!;
                    var file = t.String("file");
                    if (file is null) t.Error("file", "a list table needs file = \"path\" (one entry per line)");
                    else
                    {
                        try
                        {
                            lists[name] = File.ReadAllLines(ResolvePath(file))
                                .Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
                        }
                        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                        {
                            t.Error("file", $"cannot read '{file}': {e.Message}");
                        }
                    }
                    t.ReportUnknownKeys();
                }
                else if (s.StringList(name) is { } items)
                {
                    lists[name] = items;
                }
            }
            s.ReportUnknownKeys();
            return new NamedLists(lists);
        }

        private AdminSettings ReadAdmin(Section? s)
        {
            var bind = s?.String("bind") is { } b
                ? s.ParseEndpoint("bind", b, null) ?? new IPEndPoint(IPAddress.Loopback, 8025)
                : new IPEndPoint(IPAddress.Loopback, 8025);
            var token = s?.String("token");
            if (token is { Length: 0 }) s!.Error("token", "must not be empty (leave it out to disable the admin API)");
            var fromEnvironment = Environment.GetEnvironmentVariable(AdminTokenVariable);
            if (!string.IsNullOrEmpty(fromEnvironment)) token = fromEnvironment;
            s?.ReportUnknownKeys();
            return new AdminSettings(bind, string.IsNullOrEmpty(token) ? null : token);
        }

        private DsnSettings ReadDsn(Section? s, string hostname)
        {
            var name = s?.String("from-name") ?? "Mail Delivery System";
            var address = s?.String("from-address") ?? $"MAILER-DAEMON@{hostname}";
            var limit = s?.Size("full-return-limit", 50 * 1024) ?? 50 * 1024;
            s?.ReportUnknownKeys();
            return new DsnSettings(name, address) { FullReturnLimit = limit };
        }

        private QueueSettings? ReadQueue(Section? q, StrategyEnvironment environment, NamedLists lists)
        {
            if (q is null)
            {
                root.Errors.Add(1, "queue", "missing: a config needs [queue.strategy], [queue.schedule.*] and [queue.virtual.*]");
                return null;
            }

            var virtualQueues = new Dictionary<string, VirtualQueueSettings>(StringComparer.Ordinal);
            if (q.Table("virtual") is { } v)
            {
                foreach (var (name, t) in v.NamedTables())
                {
                    var threads = (int)t.Integer("threads-per-node", DefaultThreadsPerNode, 1, 100_000);
                    var aging = t.Duration("priority-aging", TimeSpan.FromMinutes(1));
                    long? maxSize = t.Has("max-size") ? t.Integer("max-size", 0, 1, long.MaxValue) : null;
                    t.ReportUnknownKeys();
                    virtualQueues[name] = new VirtualQueueSettings(name, threads, aging, maxSize);
                }
            }
            else q.Error("virtual", "missing: define at least one [queue.virtual.NAME] with threads-per-node");

            var schedules = new Dictionary<string, ScheduleSettings>(StringComparer.Ordinal);
            if (q.Table("schedule") is { } sch)
            {
                foreach (var (name, t) in sch.NamedTables())
                {
                    var queueName = t.String("queue-name") ?? name;
                    if (!virtualQueues.ContainsKey(queueName))
                        t.Error("queue-name", $"virtual queue '{queueName}' is not defined (add [queue.virtual.{queueName}])");
                    var retry = t.DurationList("retry");
                    if (retry is { Count: 0 }) t.Error("retry", "must list at least one interval (the last one repeats)");
                    var notify = t.DurationList("notify");
                    Expiry expiry = new Expiry.Ttl(DefaultExpire);
                    var hasExpire = t.Has("expire");
                    var hasAttempts = t.Has("max-attempts");
                    if (hasExpire && hasAttempts)
                        t.Error("max-attempts", "cannot set both 'expire' and 'max-attempts': a schedule expires one way");
                    if (hasExpire) expiry = new Expiry.Ttl(t.Duration("expire", DefaultExpire));
                    if (hasAttempts) expiry = new Expiry.Attempts((int)t.Integer("max-attempts", 1, 1, 100_000));
                    TimeSpan? sla = t.Has("sla") ? t.Duration("sla", TimeSpan.Zero) : null;
                    t.ReportUnknownKeys();
                    schedules[name] = new ScheduleSettings(name, queueName,
                        retry is { Count: > 0 } ? retry : DefaultRetry, notify ?? DefaultNotify, expiry, sla);
                }
            }
            else q.Error("schedule", "missing: define at least one [queue.schedule.NAME]");

            QueueStrategy? strategy = null;
            if (q.Table("strategy") is { } st)
            {
                var rules = ReadRules(st, "schedule", "strategy", environment, lists,
                    name => schedules.GetValueOrDefault(name), "a [queue.schedule.*]", "schedule name", "default",
                    name => $"schedule '{name}' is not defined (add [queue.schedule.{name}])", null, null);
                if (rules is not null) strategy = new QueueStrategy(rules);
                st.ReportUnknownKeys();
            }
            else q.Error("strategy", "missing: [queue.strategy] schedule = [ { if = ..., then = ... }, { else = ... } ]");
            q.ReportUnknownKeys();
            return strategy is null ? null : new QueueSettings(strategy, schedules, virtualQueues);
        }

        /// <summary>
        /// Reads and compiles a rule list <c>key = [ { if = "expr", then = "'name'" }, ..., { else = "'name'" } ]</c>
        /// (the <c>[queue.strategy] schedule</c> syntax, shared by <c>[delivery] route</c>). Literal names are checked
        /// here with <paramref name="resolve"/>; computed ones at run time. Returns null after reporting errors.
        /// </summary>
        /// <param name="defaultFallback">The fallback name when there is no <c>else</c> rule; null makes <c>else</c> required.</param>
        /// <param name="unavailable">Variables/functions the rules may not use.</param>
        private static RuleSet<T>? ReadRules<T>(Section st, string keyName, string owner, StrategyEnvironment environment, NamedLists lists,
            Func<string, T?> resolve, string kind, string noun, string example, Func<string, string> undefined,
            string? defaultFallback, IReadOnlySet<string>? unavailable)
            where T : class
        {
            var raw = st.Raw(keyName);
            if (raw is not TomlList list)
            {
                st.Error(keyName, raw is null
                    ? "missing: a list of rules [ { if = \"expr\", then = \"'name'\" }, { else = \"'name'\" } ]"
                    : "expected a list of rules [ { if = \"expr\", then = \"'name'\" }, { else = \"'name'\" } ]");
                return null;
            }
            var key = st.KeyPath(keyName);
            var errors = st.Errors;
            var rules = new List<StrategyRule>();
            T? fallback = null;
            var hasElse = false;
            var ok = true;
            for (var i = 0; i < list.Items.Count; i++)
            {
                if (list.Items[i] is not TomlTableNode ruleNode)
                {
                    errors.Add(list.Items[i].Line, key, "each rule is an inline table { if = ..., then = ... } or { else = ... }");
                    ok = false;
                    continue;
                }
                var rule = new Section(ruleNode, $"{key}[{i}]", errors);
                var line = ruleNode.Line;
                var condition = rule.String("if");
                var then = rule.String("then");
                var elseValue = rule.String("else");
                rule.ReportUnknownKeys();
                if (elseValue is not null)
                {
                    hasElse = true;
                    if (condition is not null || then is not null)
                    { errors.Add(line, rule.Path, "an 'else' rule has no 'if' or 'then'"); ok = false; continue; }
                    if (i != list.Items.Count - 1)
                    { errors.Add(line, rule.Path, "'else' must be the last rule"); ok = false; }
                    StrategyCompiler.CompileResult(elseValue, lists, out var literal, out var error, unavailable);
                    if (error is not null) { errors.Add(line, $"{rule.Path}.else", error); ok = false; }
                    else if (literal is null) { errors.Add(line, $"{rule.Path}.else", $"must be a quoted {noun} like \"'{example}'\" so there is always a fallback"); ok = false; }
                    else if ((fallback = resolve(literal)) is null)
                    { errors.Add(line, $"{rule.Path}.else", undefined(literal)); ok = false; }
                    continue;
                }
                if (condition is null || then is null)
                {
                    errors.Add(line, rule.Path, condition is null ? "a rule needs 'if' (or is an 'else' rule)" : "an 'if' rule needs 'then'");
                    ok = false;
                    continue;
                }
                var test = StrategyCompiler.CompileCondition(condition, lists, out var conditionError, unavailable);
                if (conditionError is not null) { errors.Add(line, $"{rule.Path}.if", conditionError); ok = false; }
                var compute = StrategyCompiler.CompileResult(then, lists, out var thenLiteral, out var thenError, unavailable);
                if (thenError is not null) { errors.Add(line, $"{rule.Path}.then", thenError); ok = false; }
                if (thenLiteral is not null && resolve(thenLiteral) is null)
                { errors.Add(line, $"{rule.Path}.then", undefined(thenLiteral)); ok = false; }
                if (test is not null && (thenLiteral is not null || compute is not null))
                    rules.Add(new StrategyRule(owner, line, condition, then, test, compute, thenLiteral));
            }
            if (!hasElse)
            {
                if (defaultFallback is not null) fallback = resolve(defaultFallback);
                else
                {
                    errors.Add(list.Line, key, "no 'else' rule: add { else = \"'name'\" } as the last rule so there is always a fallback");
                    ok = false;
                }
            }
            return ok && fallback is not null ? new RuleSet<T>(rules, fallback, resolve, kind, environment) : null;
        }
    }
}
