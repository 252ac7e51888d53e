// [server] shutdown-timeout: how long SIGTERM waits for sessions and deliveries in flight (default 30 s).
using static Relay.Config.Tests.ConfigFixtures;

namespace Relay.Config.Tests;

public sealed class ShutdownTimeoutTests
{
    [Fact]
    public void Defaults_to_30_seconds_and_takes_a_duration()
    {
        Assert.Equal(TimeSpan.FromSeconds(30), LoadOk(MinimalQueue).Server.ShutdownTimeout);
        Assert.Equal(TimeSpan.FromMinutes(2), LoadOk("[server]\nshutdown-timeout = \"2m\"\n" + MinimalQueue).Server.ShutdownTimeout);
    }

    [Fact]
    public void A_bad_value_is_an_error_with_its_line()
    {
        var errors = LoadErrors("[server]\nshutdown-timeout = \"soon\"\n" + MinimalQueue);
        AssertError(errors, 2, "server.shutdown-timeout", "duration");
    }
}
