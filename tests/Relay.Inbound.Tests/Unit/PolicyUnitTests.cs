using Relay.Inbound.Policy;

namespace Relay.Inbound.Tests.Unit;

public sealed class SecretVerifierTests
{
    [Fact]
    public void Plain_secrets_match_exactly()
    {
        Assert.True(SecretVerifier.Verify("s3cret", "s3cret"));
        Assert.False(SecretVerifier.Verify("s3cret", "S3cret"));
        Assert.False(SecretVerifier.Verify("s3cret", ""));
    }

    [Fact]
    public void Sha256_secrets()
    {
        // printf 'password' | sha256sum
        const string secret = "sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        Assert.True(SecretVerifier.Verify(secret, "password"));
        Assert.False(SecretVerifier.Verify(secret, "Password"));
        Assert.False(SecretVerifier.Verify("sha256:zz", "password"));
    }

    [Fact]
    public void Pbkdf2_secrets_round_trip()
    {
        var secret = SecretVerifier.Hash("correct horse", iterations: 1000);
        Assert.StartsWith("pbkdf2-sha256:1000:", secret);
        Assert.True(SecretVerifier.Verify(secret, "correct horse"));
        Assert.False(SecretVerifier.Verify(secret, "correct horse "));
        Assert.False(SecretVerifier.Verify("pbkdf2-sha256:1000:not-base64:x", "correct horse"));
    }
}

public sealed class PriorityResolverTests
{
    [Theory]
    [InlineData("urgent", 6)]
    [InlineData("IMMEDIATE", 6)]
    [InlineData("high", 3)]
    [InlineData("normal", 0)]
    [InlineData("medium", 0)]
    [InlineData("low", -3)]
    [InlineData("bulk", -6)]
    [InlineData("9", 9)]
    [InlineData("-9", -9)]
    [InlineData("+2", 2)]
    [InlineData("10", null)]
    [InlineData("soon", null)]
    [InlineData("", null)]
    [InlineData(null, null)]
    public void Header_values_map_to_the_rfc6710_scale(string? value, int? expected) =>
        Assert.Equal(expected, PriorityResolver.FromHeaderValue(value));

    [Fact]
    public void First_source_that_applies_wins()
    {
        Assert.Equal(5, PriorityResolver.Resolve(5, true, "urgent", true, 0));
        Assert.Equal(6, PriorityResolver.Resolve(5, false, "urgent", true, 0));
        Assert.Equal(-1, PriorityResolver.Resolve(5, false, "urgent", false, -1));
        Assert.Equal(-1, PriorityResolver.Resolve(null, true, "nonsense", true, -1));
    }
}
