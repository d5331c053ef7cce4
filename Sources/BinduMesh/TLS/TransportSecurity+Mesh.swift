import BinduDataPath
import BinduMeshConfig
import GRPCNIOTransportCore
import GRPCNIOTransportHTTP2
import Logging

/// TLS of the grpc-swift parts (the registry listener, the client to the core), whose own
/// certificate and key come from a ``TLSMaterial`` each, so they reload without a restart as
/// every TLS file of the mesh does (``TLSReloader``).
enum GRPCTransportSecurity {
  /// The registry's transport security and the material of its certificate, or plaintext.
  static func registry(
    _ tls: MeshConfig.ListenerTLS?, logger: Logger
  ) throws -> (HTTP2ServerTransport.Posix.TransportSecurity, TLSMaterial?) {
    guard let tls else { return (.plaintext, nil) }
    guard tls.clientAuth != .optional else {
      throw TLSError(
        use: "registry", files: [tls.certificate],
        underlying: ConfigError(
          source: "registry.tls", key: "client_auth", message: "the registry supports required or none, not optional"))
    }
    let material = try TLSMaterial.certificate(tls.certificate, key: tls.privateKey, use: "registry", logger: logger)
    let security = HTTP2ServerTransport.Posix.TransportSecurity.tls(
      .defaults(
        certificateChain: [.file(path: tls.certificate, format: .pem)],
        privateKey: .file(path: tls.privateKey, format: .pem)
      ) { config in
        config.clientCertificateVerification = tls.clientAuth == .required ? .noHostnameVerification : .noVerification
        if let ca = tls.clientCA { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
        config.certificateReloader = material
      })
    return (security, material)
  }

  /// The transport security of the client to the core and the material of its own certificate
  /// (with mTLS), or plaintext.
  static func core(
    _ tls: MeshConfig.ClientTLS?, logger: Logger
  ) throws -> (HTTP2ClientTransport.Posix.TransportSecurity, TLSMaterial?) {
    guard let tls else { return (.plaintext, nil) }
    guard tls.allowedIdentities.isEmpty else {
      throw TLSError(
        use: "core", files: [],
        underlying: ConfigError(
          source: "core.tls", key: "allowed_identities", message: "not supported for the core: use server_name"))
    }
    var material: TLSMaterial?
    if let certificate = tls.certificate, let key = tls.privateKey {
      material = try TLSMaterial.certificate(certificate, key: key, use: "core", logger: logger)
    }
    let security = HTTP2ClientTransport.Posix.TransportSecurity.tls(
      .defaults { config in
        if let ca = tls.ca { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
        if let certificate = tls.certificate, let key = tls.privateKey {
          config.certificateChain = [.file(path: certificate, format: .pem)]
          config.privateKey = .file(path: key, format: .pem)
        }
        config.serverCertificateVerification = .fullVerification
        config.certificateReloader = material
      })
    return (security, material)
  }
}
