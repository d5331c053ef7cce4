import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads every ``TLSMaterial`` whose files changed, every `admin.tls_reload_interval` and at
/// once on SIGHUP, reloads the grpc-swift parts' certificates on SIGHUP (their reloaders also
/// poll on their own), and keeps the certificate expiry gauges current.
///
/// It traps SIGHUP whatever the config, so that `systemctl reload` (SIGHUP) never ends a mesh
/// that has no TLS files: SIGHUP's default action would.
struct TLSReloader: Service {
  let materials: [TLSMaterial]
  let grpcCertificates: [GRPCCertificateReloader]
  let interval: Duration
  let metrics: MeshMetrics
  let logger: Logger

  func run() async throws {
    let signals = await UnixSignalsSequence(trapping: .sighup)
    guard !materials.isEmpty || !grpcCertificates.isEmpty else {
      for await _ in signals.cancelOnGracefulShutdown() {
        logger.notice("SIGHUP: no TLS files to reload")
      }
      return
    }
    updateGauges()
    await withDiscardingTaskGroup { group in
      group.addTask {
        for await _ in signals.cancelOnGracefulShutdown() {
          logger.notice("SIGHUP: reloading TLS files")
          materials.forEach { $0.reloadIfChanged(force: true) }
          reloadGRPCCertificates()
          updateGauges()
        }
      }
      while !Task.isShuttingDownGracefully {
        do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) } } catch { break }
        // The gRPC parts' reloaders poll on their own; the gauges follow their files.
        _ = materials.map { $0.reloadIfChanged() }
        updateGauges()
      }
      group.cancelAll()
    }
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
