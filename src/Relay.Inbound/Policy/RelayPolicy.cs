// RelayPolicy: who may send to which recipient (no open relay).
// Non-local domains need a client in [session.relay] networks or an authenticated session.
// Address tricks (% hack, bang paths, quoted local parts, source routes) count as non-local,
// so they never turn a local address into a relayed one.
using System.Net;
using Relay.Config.Settings;
using Relay.Inbound.Protocol;

namespace Relay.Inbound.Policy;

internal static class RelayPolicy
{
    public static bool IsInNetworks(IReadOnlyList<IPNetwork> networks, IPAddress address)
    {
        foreach (var network in networks)
        {
            if (network.Contains(address))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>True when delivering to <paramref name="recipient"/> means relaying for the client.</summary>
    public static bool NeedsRelayPermission(SmtpPath recipient, LocalSettings local) =>
        recipient.HasRoutingTricks || recipient.Domain.StartsWith('[') || !local.IsLocal(recipient.Domain);

    public static bool MayRelay(SessionSettings session, IPAddress client, bool authenticated) =>
        authenticated || IsInNetworks(session.Relay.Networks, client);
}
