// SecretVerifier: checks an AUTH password against a [session.relay] users secret.
// Secret forms (README "AUTH secrets"):
//   pbkdf2-sha256:<iterations>:<salt base64>:<hash base64>   recommended (see Hash)
//   sha256:<64 hex digits>                                      SHA-256 of the UTF-8 password
//   anything else                                               the password itself
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Relay.Inbound.Policy;

public static class SecretVerifier
{
    private const string Pbkdf2Prefix = "pbkdf2-sha256:";
    private const string Sha256Prefix = "sha256:";

    /// <summary>Constant-time check of <paramref name="password"/> against <paramref name="secret"/>.</summary>
    public static bool Verify(string secret, string password)
    {
        var given = Encoding.UTF8.GetBytes(password);
        if (secret.StartsWith(Pbkdf2Prefix, StringComparison.Ordinal))
        {
            var parts = secret[Pbkdf2Prefix.Length..].Split(':');
            if (parts.Length != 3 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var iterations)
                || iterations is < 1 or > 10_000_000)
            {
                return false;
            }

            byte[] salt, expected;
            try
            {
                salt = Convert.FromBase64String(parts[1]);
                expected = Convert.FromBase64String(parts[2]);
            }
            catch (FormatException)
            {
                return false;
            }

            var actual = Rfc2898DeriveBytes.Pbkdf2(given, salt, iterations, HashAlgorithmName.SHA256, expected.Length);
            return expected.Length > 0 && CryptographicOperations.FixedTimeEquals(actual, expected);
        }

        if (secret.StartsWith(Sha256Prefix, StringComparison.Ordinal))
        {
            byte[] expected;
            try
            {
                expected = Convert.FromHexString(secret[Sha256Prefix.Length..]);
            }
            catch (FormatException)
            {
                return false;
            }

            return expected.Length == 32 && CryptographicOperations.FixedTimeEquals(SHA256.HashData(given), expected);
        }

        // Plain secret: compare hashes so the time does not depend on where the strings differ.
        return CryptographicOperations.FixedTimeEquals(SHA256.HashData(given), SHA256.HashData(Encoding.UTF8.GetBytes(secret)));
    }

    /// <summary>Makes a <c>pbkdf2-sha256:</c> secret for the config file.</summary>
    public static string Hash(string password, int iterations = 210_000)
    {
        var salt = RandomNumberGenerator.GetBytes(16);
        var hash = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, 32);
        return $"{Pbkdf2Prefix}{iterations.ToString(CultureInfo.InvariantCulture)}:{Convert.ToBase64String(salt)}:{Convert.ToBase64String(hash)}";
    }
}
