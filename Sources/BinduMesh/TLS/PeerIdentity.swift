import Logging
import NIOSSL
import X509

/// The identities a certificate names: its SAN DNS names and URIs (such as SPIFFE IDs).
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
  /// SAN DNS names.
  public var dnsNames: [String]
  /// SAN URIs.
  public var uris: [String]
  /// The certificate's serial number, in hex.
  public var serial: String

  /// Reads the identities of a DER certificate.
  public init(derEncoded der: [UInt8]) throws {
    try self.init(certificate: Certificate(derEncoded: der))
  }

  /// Reads the identities of a certificate.
  public init(certificate: Certificate) throws {
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
  public func isAllowed(by allowed: [String]) -> Bool {
    allowed.isEmpty || !Set(allowed).isDisjoint(with: dnsNames + uris)
  }

  public var description: String {
    let names = dnsNames.map { "dns:\($0)" } + uris.map { "uri:\($0)" }
    return names.isEmpty ? "no SAN identity (serial \(serial))" : names.joined(separator: ", ")
  }
}

extension PeerIdentity {
  /// The one log line for a TLS peer refused by an identity allow-list.
  static func logRefusal(_ identity: PeerIdentity?, peer: String, role: String, allowed: [String], logger: Logger) {
    logger.warning(
      "TLS peer refused: its certificate names no allowed identity",
      metadata: [
        "mesh.peer": "\(peer)", "mesh.peer_role": "\(role)",
        "mesh.identity": "\(identity?.description ?? "no certificate")", "mesh.allowed": "\(allowed)",
      ])
  }
}
