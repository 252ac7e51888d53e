// TestCertificate: a self-signed certificate written as PEM files, as an operator would configure it.
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Inbound.Tests.Harness;

public static class TestCertificate
{
    private static readonly Lazy<(string Cert, string Key)> Files = new(Create);

    public static (string Cert, string Key) PemFiles => Files.Value;

    private static (string, string) Create()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=relay.test", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("relay.test");
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        var dir = Directory.CreateTempSubdirectory("relay-inbound-tls-").FullName;
        var certPath = Path.Combine(dir, "cert.pem");
        var keyPath = Path.Combine(dir, "key.pem");
        File.WriteAllText(certPath, cert.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return (certPath, keyPath);
    }
}
