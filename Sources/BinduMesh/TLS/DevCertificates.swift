import Crypto
import Foundation
import SwiftASN1
import X509

/// Makes a development CA and server and client certificates signed by it, as PEM files, for
/// trying mTLS in one step (`bindu-mesh certs dev`). Not for production: use your PKI
/// (cert-manager, step-ca, ...) there.
package enum DevCertificates {
  /// What to make.
  package struct Options: Sendable {
    /// Folder for the files.
    package var directory: String
    /// DNS names and IP addresses the server certificate is valid for.
    package var hosts: [String] = ["localhost", "127.0.0.1", "::1"]
    /// SAN URIs (such as SPIFFE IDs) or DNS names of the client certificate.
    package var clientIdentities: [String] = ["spiffe://bindu-mesh/dev-client"]
    /// Validity in days.
    package var days: Int = 365
    /// Make a new CA even when the folder has one.
    package var newCA = false

    /// Options with defaults for the rest.
    package init(directory: String) { self.directory = directory }
  }

  /// The files written, by name.
  package static func make(_ options: Options) throws -> [String] {
    try FileManager.default.createDirectory(atPath: options.directory, withIntermediateDirectories: true)
    let path = { (name: String) in URL(fileURLWithPath: options.directory).appendingPathComponent(name).path }
    let now = Date()
    let until = now.addingTimeInterval(Double(options.days) * 86_400)
    var written: [String] = []

    let (ca, caKey): (Certificate, Certificate.PrivateKey)
    if !options.newCA, let pem = try? String(contentsOfFile: path("ca.pem"), encoding: .utf8),
      let keyPEM = try? String(contentsOfFile: path("ca-key.pem"), encoding: .utf8)
    {
      (ca, caKey) = (try Certificate(pemEncoded: pem), try Certificate.PrivateKey(pemEncoded: keyPEM))
    } else {
      let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
      let name = try DistinguishedName { CommonName("bindu-mesh development CA") }
      ca = try Certificate(
        version: .v3, serialNumber: .init(), publicKey: key.publicKey, notValidBefore: now.addingTimeInterval(-300),
        notValidAfter: until, issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
        extensions: try Certificate.Extensions {
          Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
          Critical(KeyUsage(keyCertSign: true, cRLSign: true))
        }, issuerPrivateKey: key)
      caKey = key
      try write(ca.serializeAsPEM().pemString, to: path("ca.pem"))
      try write(key.serializeAsPEM().pemString, to: path("ca-key.pem"))
      written += [path("ca.pem"), path("ca-key.pem")]
    }

    for (name, usage, sans) in [
      ("server", ExtendedKeyUsage.Usage.serverAuth, options.hosts.map(Self.subjectName)),
      ("client", ExtendedKeyUsage.Usage.clientAuth, options.clientIdentities.map(Self.clientName)),
    ] {
      let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
      let certificate = try Certificate(
        version: .v3, serialNumber: .init(), publicKey: key.publicKey, notValidBefore: now.addingTimeInterval(-300),
        notValidAfter: until, issuer: ca.subject,
        subject: try DistinguishedName { CommonName("bindu-mesh development \(name)") },
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: try Certificate.Extensions {
          Critical(BasicConstraints.notCertificateAuthority)
          Critical(KeyUsage(digitalSignature: true))
          try ExtendedKeyUsage([usage])
          SubjectAlternativeNames(sans)
        }, issuerPrivateKey: caKey)
      try write(certificate.serializeAsPEM().pemString, to: path("\(name).pem"))
      try write(key.serializeAsPEM().pemString, to: path("\(name)-key.pem"))
      written += [path("\(name).pem"), path("\(name)-key.pem")]
    }
    return written
  }

  /// A SAN for a server host: an IP address or a DNS name.
  static func subjectName(_ host: String) -> GeneralName {
    if let v4 = IPv4(host) { return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(v4))) }
    if let v6 = IPv6(host) { return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(v6))) }
    return .dnsName(host)
  }

  /// A SAN for a client identity: a URI when it has a scheme, else a DNS name.
  static func clientName(_ identity: String) -> GeneralName {
    identity.contains("://") ? .uniformResourceIdentifier(identity) : .dnsName(identity)
  }

  private static func write(_ text: String, to path: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
  }

  private static func IPv4(_ text: String) -> [UInt8]? {
    let parts = text.split(separator: ".", omittingEmptySubsequences: false).map { UInt8($0) }
    guard parts.count == 4, parts.allSatisfy({ $0 != nil }) else { return nil }
    return parts.map { $0! }
  }

  private static func IPv6(_ text: String) -> [UInt8]? {
    var address = in6_addr()
    guard text.contains(":"), inet_pton(AF_INET6, text, &address) == 1 else { return nil }
    return withUnsafeBytes(of: &address) { Array($0) }
  }
}

#if canImport(Glibc)
  import Glibc
#endif
