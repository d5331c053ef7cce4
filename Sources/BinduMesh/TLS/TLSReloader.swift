import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Reloads every ``TLSMaterial`` whose files changed, every `admin.tls_reload_interval`, and
/// every TLS file at once on ``reloadAll()`` (SIGHUP, through ``ConfigReloader``), including
/// the grpc-swift parts' certificates (their reloaders also poll on their own); keeps the
/// certificate expiry gauges current.
final class TLSReloader: Service, Sendable {
  private let watched: Mutex<[TLSMaterial]>
  let grpcCertificates: [GRPCCertificateReloader]
  let interval: Duration
  let metrics: MeshMetrics
  let logger: Logger

  init(
    materials: [TLSMaterial], grpcCertificates: [GRPCCertificateReloader], interval: Duration, metrics: MeshMetrics,
    logger: Logger
  ) {
    self.watched = Mutex(materials)
    self.grpcCertificates = grpcCertificates
    self.interval = interval
    self.metrics = metrics
    self.logger = logger
  }

  /// The files watched.
  var materials: [TLSMaterial] { watched.withLock { $0 } }

  /// Watches `materials` from now on (the pools' TLS after a config reload).
  func watch(_ materials: [TLSMaterial]) {
    watched.withLock { $0 = materials }
    updateGauges()
  }

  func run() async throws {
    updateGauges()
    while !Task.isShuttingDownGracefully {
      do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) } } catch { break }
      // The gRPC parts' reloaders poll on their own; the gauges follow their files.
      _ = materials.map { $0.reloadIfChanged() }
      updateGauges()
    }
  }

  /// Reloads every TLS file now, changed or not.
  func reloadAll() {
    let materials = self.materials
    guard !materials.isEmpty || !grpcCertificates.isEmpty else {
      logger.notice("no TLS files to reload")
      return
    }
    materials.forEach { $0.reloadIfChanged(force: true) }
    reloadGRPCCertificates()
    updateGauges()
  }

  private func reloadGRPCCertificates() {
    for certificate in grpcCertificates {
      do {
        try certificate.reloader.reload()
        logger.notice(
          "TLS files reloaded: new connections use them", metadata: ["mesh.files": "[\(certificate.certificate)]"])
      } catch {
        logger.error(
          "TLS files cannot be used; the previous certificate stays in use",
          metadata: ["mesh.files": "[\(certificate.certificate)]", "error": "\(error)"])
      }
    }
  }

  /// Every certificate it watches and when it expires (`nil`: not read).
  var expiries: [(use: String, notAfter: Date?)] {
    materials.map { ($0.use, $0.notAfter) } + grpcCertificates.map { ($0.use, $0.notAfter) }
  }

  private func updateGauges() {
    for (use, notAfter) in expiries {
      guard let notAfter else { continue }
      metrics.gauge("certificate_expiry_timestamp_seconds", [("use", use)]).record(notAfter.timeIntervalSince1970)
    }
  }
}
