import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads every ``TLSMaterial`` whose files changed, every `admin.tls_reload_interval` and at
/// once on SIGHUP, and keeps the certificate expiry gauges current.
struct TLSReloader: Service {
  let materials: [TLSMaterial]
  let interval: Duration
  let metrics: MeshMetrics
  let logger: Logger

  func run() async throws {
    guard !materials.isEmpty else {
      try? await gracefulShutdown()
      return
    }
    updateGauges()
    let signals = await UnixSignalsSequence(trapping: .sighup)
    await withDiscardingTaskGroup { group in
      group.addTask {
        for await _ in signals.cancelOnGracefulShutdown() {
          logger.notice("SIGHUP: reloading TLS files")
          materials.forEach { $0.reloadIfChanged(force: true) }
          updateGauges()
        }
      }
      while !Task.isShuttingDownGracefully {
        do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) } } catch { break }
        if materials.map({ $0.reloadIfChanged() }).contains(true) { updateGauges() }
      }
      group.cancelAll()
    }
  }

  private func updateGauges() {
    for material in materials {
      guard let notAfter = material.notAfter else { continue }
      metrics.gauge("certificate_expiry_timestamp_seconds", [("use", material.use)])
        .record(notAfter.timeIntervalSince1970)
    }
  }
}
