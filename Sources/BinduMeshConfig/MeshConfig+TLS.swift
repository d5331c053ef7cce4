extension MeshConfig {
  /// TLS on a listener (`tls:` of `registry`, `callbacks`, or `listener_tls:` of a pool).
  ///
  /// Files are PEM. With `client_ca`, callers must present a certificate signed by it
  /// (`client_auth: required`, the default then) or may (`optional`).
  package struct ListenerTLS: Sendable, Hashable {
    /// How a listener treats client certificates.
    package enum ClientAuth: String, Sendable, Hashable, CaseIterable {
      /// A certificate from `client_ca` is needed.
      case required
      /// A certificate, if presented, must come from `client_ca`.
      case optional
      /// Client certificates are not asked for.
      case none
    }

    /// The listener's certificate chain (PEM).
    package var certificate: String
    /// Its private key (PEM).
    package var privateKey: String
    /// CA bundle that client certificates must chain to (PEM).
    package var clientCA: String?
    /// Whether a client certificate is needed. Default `required` with `client_ca`, else `none`.
    package var clientAuth: ClientAuth
    /// When not empty, a client certificate must name one of these (a SAN DNS name or URI, such
    /// as a SPIFFE ID).
    package var allowedIdentities: [String]

    /// Creates a listener TLS configuration.
    package init(
      certificate: String, privateKey: String, clientCA: String? = nil, clientAuth: ClientAuth? = nil,
      allowedIdentities: [String] = []
    ) {
      self.certificate = certificate
      self.privateKey = privateKey
      self.clientCA = clientCA
      self.clientAuth = clientAuth ?? (clientCA == nil ? .none : .required)
      self.allowedIdentities = allowedIdentities
    }
  }

  /// TLS on connections the mesh makes (`upstream_tls:` of a pool or `callbacks`, `tls:` of `core`).
  package struct ClientTLS: Sendable, Hashable {
    /// CA bundle the server's certificate must chain to (PEM). Default: the system's roots.
    package var ca: String?
    /// The mesh's client certificate chain, for mTLS (PEM).
    package var certificate: String?
    /// Its private key (PEM).
    package var privateKey: String?
    /// The name the server's certificate must carry. Default: the host dialled (an IP address
    /// is checked against the certificate's IP SANs).
    package var serverName: String?
    /// When not empty, the server's certificate must name one of these (SAN DNS name or URI).
    package var allowedIdentities: [String]

    /// Creates a client TLS configuration.
    package init(
      ca: String? = nil, certificate: String? = nil, privateKey: String? = nil, serverName: String? = nil,
      allowedIdentities: [String] = []
    ) {
      self.ca = ca
      self.certificate = certificate
      self.privateKey = privateKey
      self.serverName = serverName
      self.allowedIdentities = allowedIdentities
    }
  }
}
