// QueueCommand: `relay queue list|show|retry|cancel`. Finds the admin API's address and token (flags first,
// then the config file) and hands over to Relay.Admin's QueueCli, which talks to the API and prints.
using System.Net;
using Relay.Admin.Client;
using Relay.Config;

namespace Relay.Commands;

public static class QueueCommand
{
    public static async Task<int> RunAsync(Options options, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        if (options.Positional is not ["queue", .. var words] || words.Count == 0 || options.Has("help"))
        {
            await stderr.WriteLineAsync(QueueCli.Usage);
            return 2;
        }

        var url = options.Get("url");
        var token = options.Get("token");
        if (url is null || token is null)
        {
            var loaded = ConfigLoader.LoadFile(options.ConfigPath);
            if (!loaded.Ok)
            {
                foreach (var error in loaded.Errors) await stderr.WriteLineAsync(error.ToString());
                await stderr.WriteLineAsync($"relay: queue: cannot read the admin address and token from {options.ConfigPath} (or pass --url and --token)");
                return 1;
            }
            var admin = loaded.Settings!.Admin;
            url ??= "http://" + Reachable(admin.Bind) + "/";
            token ??= admin.Token;
            if (token is null)
            {
                await stderr.WriteLineAsync($"relay: queue: {options.ConfigPath} sets no [admin] token, so the admin API is off (or pass --token)");
                return 1;
            }
        }
        if (!Uri.TryCreate(url.EndsWith('/') ? url : url + "/", UriKind.Absolute, out var baseAddress) || baseAddress.Scheme is not ("http" or "https"))
        {
            await stderr.WriteLineAsync($"relay: queue: --url {url} is not an http(s) URL");
            return 2;
        }

        var request = new QueueCliRequest(words, options.Has("json"), options.Get("queue"), options.Get("domain"),
                                          options.Get("sender"), options.Get("status"), options.Has("bounce"));
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        return await QueueCli.RunAsync(new AdminClient(http, baseAddress, token), request, stdout, stderr, ct);
    }

    /// <summary>A wildcard bind (0.0.0.0, ::) is reached on loopback.</summary>
    private static string Reachable(IPEndPoint bind)
    {
        var address = bind.Address.Equals(IPAddress.Any) ? IPAddress.Loopback
            : bind.Address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback
            : bind.Address;
        return new IPEndPoint(address, bind.Port).ToString();
    }
}
