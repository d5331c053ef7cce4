import GRPCNIOTransportCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCertificateReloading

/// TLS of the grpc-swift parts (the registry listener, the client to the core), with a
/// `TimedCertificateReloader` each so their certificates reload without a restart (a `Service`
/// to run; ``TLSReloader`` also reloads it on SIGHUP).
enum GRPCTransportSecurity {
  /// The registry's transport security and its reloader (a `Service` to run), or plaintext.
  static func registry(
    _ tls: MeshConfig.ListenerTLS?, reloadInterval: Duration, logger: Logger
  ) throws -> (HTTP2ServerTransport.Posix.TransportSecurity, GRPCCertificateReloader?) {
    guard let tls else { return (.plaintext, nil) }
    guard tls.clientAuth != .optional else {
      throw TLSError(
        use: "registry", files: [tls.certificate],
        underlying: ConfigError(
          source: "registry.tls", key: "client_auth", message: "the registry supports required or none, not optional"))
    }
    let reloader = try reloader(certificate: tls.certificate, key: tls.privateKey, interval: reloadInterval, logger: logger)
    let security = HTTP2ServerTransport.Posix.TransportSecurity.tls(
      .defaults(
        certificateChain: [.file(path: tls.certificate, format: .pem)],
        privateKey: .file(path: tls.privateKey, format: .pem)
      ) { config in
        config.clientCertificateVerification = tls.clientAuth == .required ? .noHostnameVerification : .noVerification
        if let ca = tls.clientCA { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
        config.certificateReloader = reloader
      })
    return (security, GRPCCertificateReloader(use: "registry", certificate: tls.certificate, reloader: reloader))
  }

  /// The transport security of the client to the core and its reloader, or plaintext.
  static func core(
    _ tls: MeshConfig.ClientTLS?, reloadInterval: Duration, logger: Logger
  ) throws -> (HTTP2ClientTransport.Posix.TransportSecurity, GRPCCertificateReloader?) {
    guard let tls else { return (.plaintext, nil) }
    guard tls.allowedIdentities.isEmpty else {
      throw TLSError(
        use: "core", files: [],
        underlying: ConfigError(
          source: "core.tls", key: "allowed_identities", message: "not supported for the core: use server_name"))
    }
    var reloader: GRPCCertificateReloader?
    if let certificate = tls.certificate, let key = tls.privateKey {
      reloader = GRPCCertificateReloader(
        use: "core", certificate: certificate,
        reloader: try Self.reloader(certificate: certificate, key: key, interval: reloadInterval, logger: logger))
    }
    let security = HTTP2ClientTransport.Posix.TransportSecurity.tls(
      .defaults { config in
        if let ca = tls.ca { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
        if let certificate = tls.certificate, let key = tls.privateKey {
          config.certificateChain = [.file(path: certificate, format: .pem)]
          config.privateKey = .file(path: key, format: .pem)
        }
        config.serverCertificateVerification = .fullVerification
        config.certificateReloader = reloader?.reloader
      })
    return (security, reloader)
  }

  private static func reloader(certificate: String, key: String, interval: Duration, logger: Logger) throws
    -> TimedCertificateReloader
  {
    try TimedCertificateReloader.makeReloaderValidatingSources(
      refreshInterval: interval,
      certificateSource: .init(location: .file(path: certificate), format: .pem),
      privateKeySource: .init(location: .file(path: key), format: .pem),
      logger: logger)
  }
}
