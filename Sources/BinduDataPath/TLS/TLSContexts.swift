import BinduMeshConfig

/// TLS of a callback listener: the context source and the client identities allowed.
package struct ListenerTLSContext: Sendable {
  let material: TLSMaterial
  let allowedIdentities: [String]
}

/// TLS to a pool's replicas: the context source, the name to verify, the identities allowed.
package struct UpstreamTLSContext: Sendable {
  let material: TLSMaterial
  let serverName: String?
  let allowedIdentities: [String]

  /// The name to verify for `address`: the configured one, else the host unless it is an IP
  /// address (NIOSSL then checks the certificate's IP SANs against the address connected to).
  func serverHostname(for address: HostPort) -> String? {
    if let serverName { return serverName }
    return address.isIPAddress ? nil : address.host
  }
}
