// PriorityResolver: the DESIGN.md priority model. First that applies wins:
// MT-PRIORITY from allowed clients, then X-Message-Priority from header-from clients, then the default.
using System.Globalization;
using System.Net;
using Relay.Config.Settings;

namespace Relay.Inbound.Policy;

internal static class PriorityResolver
{
    public const string HeaderName = "X-Message-Priority";

    public static bool MayUseMtPriority(PrioritySettings settings, IPAddress client) =>
        RelayPolicy.IsInNetworks(settings.MtPriorityFrom, client);

    /// <summary>header-from, or (when unset) the relay networks and authenticated clients.</summary>
    public static bool MayUseHeader(SessionSettings session, IPAddress client, bool authenticated) =>
        session.Priority.HeaderFrom is { } networks
            ? RelayPolicy.IsInNetworks(networks, client)
            : RelayPolicy.MayRelay(session, client, authenticated);

    /// <summary>Maps an <c>X-Message-Priority:</c> value; null when it is not one we know.</summary>
    public static int? FromHeaderValue(string? value) =>
        PriorityNames.TryParse(value, out var priority) ? priority : null;   // one name table (Relay.Config)

    public static int Resolve(int? mtPriority, bool mtAllowed, string? headerValue, bool headerAllowed, int defaultPriority)
    {
        if (mtPriority is int p && mtAllowed)
        {
            return p;
        }

        if (headerAllowed && FromHeaderValue(headerValue) is int h)
        {
            return h;
        }

        return defaultPriority;
    }
}
