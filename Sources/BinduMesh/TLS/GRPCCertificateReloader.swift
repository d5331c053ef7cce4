import Foundation
import NIOCertificateReloading

/// The certificate of a grpc-swift part (the registry listener, the client to the core) and the
/// reloader grpc-swift takes it from: it reloads on its own every `admin.tls_reload_interval`,
/// and ``TLSReloader`` reloads it at once on SIGHUP and exports its expiry.
struct GRPCCertificateReloader: Sendable {
  /// `registry` or `core`, the `use` label of the expiry gauge.
  let use: String
  /// The certificate file.
  let certificate: String
  let reloader: TimedCertificateReloader

  /// When the certificate in the file stops being valid, if it can be read.
  var notAfter: Date? { TLSMaterial.expiry(certificate) }
}
