using System.Globalization;
using Relay.Config;
using Relay.Config.Settings;
using Relay.Config.Strategy;

namespace Relay.Commands;

/// <summary><c>relay route</c>: dry-runs the strategy for one recipient and prints what it would get.</summary>
public static class RouteCommand
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var rcpt = options.Get("rcpt");
        if (string.IsNullOrWhiteSpace(rcpt))
        {
            stderr.WriteLine("relay route: --rcpt ADDRESS is required");
            return 2;
        }
        var priority = 0;
        if (options.Get("priority") is { } p && (!int.TryParse(p, CultureInfo.InvariantCulture, out priority) || priority is < -9 or > 9))
        {
            stderr.WriteLine($"relay route: --priority must be an integer -9..9, not '{p}'");
            return 2;
        }
        long size = 0;
        if (options.Get("size") is { } sz && !long.TryParse(sz, CultureInfo.InvariantCulture, out size))
        {
            stderr.WriteLine($"relay route: --size must be a byte count, not '{sz}'");
            return 2;
        }
        var headers = new List<KeyValuePair<string, string>>();
        foreach (var h in options.GetAll("header"))
        {
            var colon = h.IndexOf(':');
            if (colon <= 0)
            {
                stderr.WriteLine($"relay route: --header must look like 'Name: value', not '{h}'");
                return 2;
            }
            headers.Add(new(h[..colon].Trim(), h[(colon + 1)..].Trim()));
        }

        var loaded = ConfigLoader.LoadFile(options.ConfigPath);
        if (!loaded.Ok)
        {
            foreach (var error in loaded.Errors) stderr.WriteLine(error);
            return 1;
        }
        var settings = loaded.Settings!;
        string? HeaderValue(string name) =>
            headers.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;

        var context = new RecipientContext
        {
            Recipient = rcpt.Trim(),
            Sender = options.Get("sender") ?? "",
            Priority = priority,
            Source = options.Get("source") ?? "smtp",
            Size = size,
            RemoteIp = options.Get("remote-ip") ?? "127.0.0.1",
            Listener = options.Get("listener") ?? settings.Server.Listeners.FirstOrDefault()?.Name ?? "",
            AuthenticatedAs = options.Get("auth") ?? "",
            Subject = HeaderValue("Subject") ?? "",
            Headers = HeaderValue,
        };
        var decision = settings.Queue.Strategy.Classify(context);
        if (decision.Error is not null)
            stderr.WriteLine($"warning: {decision.Error.Message}; the fallback rule was used");
        Print(stdout, decision.Schedule, priority);
        // The delivery route ([delivery] route rules): a smart host name, or MX delivery.
        var route = settings.Delivery.Route?.Select(context) ?? new RouteDecision(null, null);
        if (route.Error is not null)
            stderr.WriteLine($"warning: {route.Error.Message}; the fallback route was used");
        stdout.WriteLine(route.SmartHost is { } smartHost && settings.Delivery.SmartHosts.TryGetValue(smartHost, out var host)
            ? $"route: smart-host {smartHost} ({host.Host}:{host.Port})"
            : "route: mx");
        return 0;
    }

    public static void Print(TextWriter stdout, ScheduleSettings schedule, int priority)
    {
        stdout.WriteLine($"schedule: {schedule.Name}");
        stdout.WriteLine($"queue: {schedule.QueueName}");
        stdout.WriteLine($"priority: {priority}");
        stdout.WriteLine($"retry: {string.Join(", ", schedule.Retry.Select(DurationText.Format))}");
        stdout.WriteLine($"notify: {string.Join(", ", schedule.Notify.Select(DurationText.Format))}");
        switch (schedule.Expiry)
        {
            case Expiry.Ttl ttl: stdout.WriteLine($"expire: {DurationText.Format(ttl.After)}"); break;
            case Expiry.Attempts attempts: stdout.WriteLine($"max-attempts: {attempts.Max}"); break;
        }
        if (schedule.Sla is { } sla) stdout.WriteLine($"sla: {DurationText.Format(sla)}");
    }
}
