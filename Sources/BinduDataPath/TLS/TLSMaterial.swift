import BinduMeshConfig
import Foundation
import Logging
import NIOCertificateReloading
import NIOSSL
import Synchronization
import X509

/// A TLS context built from certificate, key and CA files, rebuilt when the files change: the
/// one way the mesh reloads its certificates (``TLSReloader`` checks every material).
///
/// Each new connection of the data path takes ``context``; connections already made keep the
/// context they were made with. The grpc-swift parts (the registry listener, the client to the
/// core) take the certificate and key of each handshake from it, as their `CertificateReloader`.
/// ``reloadIfChanged(force:)`` builds a new context when a file's modification time or size
/// changed (or always, on SIGHUP); a file that cannot be used leaves the old context in force and
/// is logged.
package final class TLSMaterial: CertificateReloader, Sendable {
  /// What the context is for, for logs and metrics (`callback:echo-agent`, `registry`, ...).
  package let use: String
  private let files: [String]
  private let build: @Sendable () throws -> Built
  private let ownCertificate: String?
  private let state: Mutex<State>
  private let logger: Logger

  /// What the files make: the data path's context, and the own certificate and key for the
  /// grpc-swift parts.
  private struct Built {
    var context: NIOSSLContext
    var override = NIOSSLContextConfigurationOverride()

    init(context: NIOSSLContext, chain: [NIOSSLCertificateSource], key: NIOSSLPrivateKeySource?) {
      self.context = context
      if !chain.isEmpty, let key {
        override.certificateChain = chain
        override.privateKey = key
      }
    }
  }

  private struct State {
    var built: Built
    var stamps: [String: FileStamp]
    var notAfter: Date?
  }

  private struct FileStamp: Equatable {
    var modified: Date?
    var size: Int?
  }

  /// The context for new connections.
  package var context: NIOSSLContext { state.withLock { $0.built.context } }

  /// The own certificate chain and key, for a grpc-swift part's next handshake.
  package var sslContextConfigurationOverride: NIOSSLContextConfigurationOverride {
    state.withLock { $0.built.override }
  }

  /// When the own certificate expires, if there is one.
  package var notAfter: Date? { state.withLock { $0.notAfter } }

  /// A server context for a listener.
  package static func server(_ tls: MeshConfig.ListenerTLS, use: String, logger: Logger) throws -> TLSMaterial {
    try TLSMaterial(
      use: use, files: [tls.certificate, tls.privateKey] + (tls.clientCA.map { [$0] } ?? []),
      ownCertificate: tls.certificate, logger: logger
    ) {
      let (chain, key) = try ownPair(certificate: tls.certificate, key: tls.privateKey)
      var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
      configuration.applicationProtocols = ["h2"]
      configuration.minimumTLSVersion = .tlsv12
      if let ca = tls.clientCA {
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
      }
      switch tls.clientAuth {
      case .required: configuration.certificateVerification = .noHostnameVerification
      case .optional: configuration.certificateVerification = .optionalVerification
      case .none: configuration.certificateVerification = .none
      }
      return Built(context: try NIOSSLContext(configuration: configuration), chain: chain, key: key)
    }
  }

  /// A client context for connections to replicas or the core.
  package static func client(_ tls: MeshConfig.ClientTLS, use: String, logger: Logger) throws -> TLSMaterial {
    let files = [tls.ca, tls.certificate, tls.privateKey].compactMap { $0 }
    return try TLSMaterial(use: use, files: files, ownCertificate: tls.certificate, logger: logger) {
      var configuration = TLSConfiguration.makeClientConfiguration()
      configuration.applicationProtocols = ["h2"]
      configuration.minimumTLSVersion = .tlsv12
      configuration.certificateVerification = .fullVerification
      if let ca = tls.ca { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) }
      if let certificate = tls.certificate, let key = tls.privateKey {
        (configuration.certificateChain, configuration.privateKey) = try ownPair(certificate: certificate, key: key)
      }
      return Built(
        context: try NIOSSLContext(configuration: configuration), chain: configuration.certificateChain,
        key: configuration.privateKey)
    }
  }

  /// The own certificate and key of a grpc-swift part (`registry`, `core`), which takes them from
  /// here at each handshake (as its `CertificateReloader`).
  package static func certificate(_ certificate: String, key: String, use: String, logger: Logger) throws -> TLSMaterial {
    try TLSMaterial(use: use, files: [certificate, key], ownCertificate: certificate, logger: logger) {
      let (chain, privateKey) = try ownPair(certificate: certificate, key: key)
      let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: privateKey)
      return Built(context: try NIOSSLContext(configuration: configuration), chain: chain, key: privateKey)
    }
  }

  /// The certificate chain and key in PEM files.
  private static func ownPair(certificate: String, key: String) throws -> ([NIOSSLCertificateSource], NIOSSLPrivateKeySource) {
    (
      try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
      .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
    )
  }

  private init(
    use: String, files: [String], ownCertificate: String?, logger: Logger,
    build: @escaping @Sendable () throws -> Built
  ) throws {
    self.use = use
    self.files = files
    self.build = build
    self.ownCertificate = ownCertificate
    self.logger = logger.with("mesh.tls", use)
    let stamps = Self.stamps(files)
    let built: Built
    do {
      built = try build()
    } catch {
      throw TLSError(use: use, files: files, underlying: error)
    }
    self.state = Mutex(State(built: built, stamps: stamps, notAfter: Self.expiry(ownCertificate)))
  }

  /// Builds a new context when a file changed (or when `force`); returns whether it did.
  @discardableResult
  package func reloadIfChanged(force: Bool = false) -> Bool {
    let stamps = Self.stamps(files)
    guard force || state.withLock({ $0.stamps != stamps }) else { return false }
    do {
      let built = try build()
      let notAfter = Self.expiry(ownCertificate)
      state.withLock { $0 = State(built: built, stamps: stamps, notAfter: notAfter) }
      logger.notice("TLS files reloaded: new connections use them", metadata: ["mesh.files": "\(files)"])
      return true
    } catch {
      // Remember the stamps so a broken file is reported once, not on every check.
      state.withLock { $0.stamps = stamps }
      logger.error(
        "TLS files changed but cannot be used; the previous certificate stays in use",
        metadata: ["mesh.files": "\(files)", "error": "\(error)"])
      return false
    }
  }

  private static func stamps(_ files: [String]) -> [String: FileStamp] {
    var stamps: [String: FileStamp] = [:]
    for file in files {
      let attributes = try? FileManager.default.attributesOfItem(atPath: file)
      stamps[file] = FileStamp(
        modified: attributes?[.modificationDate] as? Date, size: (attributes?[.size] as? NSNumber)?.intValue)
    }
    return stamps
  }

  /// When the certificate in the PEM file at `path` stops being valid, if it can be read.
  static func expiry(_ path: String?) -> Date? {
    guard let path, let pem = try? String(contentsOfFile: path, encoding: .utf8),
      let certificate = try? Certificate(pemEncoded: pem)
    else { return nil }
    return certificate.notValidAfter
  }
}

/// TLS files that cannot be used, at start.
package struct TLSError: Error, CustomStringConvertible {
  package var use: String
  package var files: [String]
  package var underlying: any Error
  package var description: String { "TLS for \(use): cannot use \(files.joined(separator: ", ")): \(underlying)" }

  package init(use: String, files: [String], underlying: any Error) {
    self.use = use
    self.files = files
    self.underlying = underlying
  }
}
