import Logging
import NIOSSL
import X509

/// The identities a certificate names: its SAN DNS names and URIs (such as SPIFFE IDs).
package struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
  /// SAN DNS names.
  package var dnsNames: [String]
  /// SAN URIs.
  package var uris: [String]
  /// The certificate's serial number, in hex.
  package var serial: String

  /// Reads the identities of a DER certificate.
  package init(derEncoded der: [UInt8]) throws {
    try self.init(certificate: Certificate(derEncoded: der))
  }

  /// Reads the identities of a certificate.
  package init(certificate: Certificate) throws {
    var dns: [String] = []
    var uris: [String] = []
    if let names = try certificate.extensions.subjectAlternativeNames {
      for name in names {
        switch name {
        case .dnsName(let value): dns.append(value)
        case .uniformResourceIdentifier(let value): uris.append(value)
        default: break
        }
      }
    }
    self.dnsNames = dns
    self.uris = uris
    self.serial = certificate.serialNumber.description
  }

  /// Whether one of the names is in `allowed` (exact match). An empty list allows anyone.
  package func isAllowed(by allowed: [String]) -> Bool {
    allowed.isEmpty || !Set(allowed).isDisjoint(with: dnsNames + uris)
  }

  package var description: String {
    let names = dnsNames.map { "dns:\($0)" } + uris.map { "uri:\($0)" }
    return names.isEmpty ? "no SAN identity (serial \(serial))" : names.joined(separator: ", ")
  }
}

extension PeerIdentity {
  /// The one log line for a TLS peer refused by an identity allow-list.
  package static func logRefusal(_ identity: PeerIdentity?, peer: String, role: String, allowed: [String], logger: Logger) {
    logger.warning(
      "TLS peer refused: its certificate names no allowed identity",
      metadata: [
        "mesh.peer": "\(peer)", "mesh.peer_role": "\(role)",
        "mesh.identity": "\(identity?.description ?? "no certificate")", "mesh.allowed": "\(allowed)",
      ])
  }
}
