import BinduDataPath
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Reloads every ``TLSMaterial`` whose files changed, every `admin.tls_reload_interval`, and
/// every TLS file at once on ``reloadAll()`` (SIGHUP, through ``ConfigReloader``): the data
/// path's listeners and replica connections, and the certificates of the registry and of the
/// client to the core; keeps the certificate expiry gauges current.
final class TLSReloader: Service, Sendable {
  /// The registry's and the core client's: in force until the next start.
  private let fixed: [TLSMaterial]
  /// The pools': a config reload changes them (``watch(_:)``).
  private let watched: Mutex<[TLSMaterial]>
  let interval: Duration
  let metrics: MeshMetrics
  let logger: Logger

  init(fixed: [TLSMaterial], materials: [TLSMaterial], interval: Duration, metrics: MeshMetrics, logger: Logger) {
    self.fixed = fixed
    self.watched = Mutex(materials)
    self.interval = interval
    self.metrics = metrics
    self.logger = logger
  }

  /// The files watched.
  var materials: [TLSMaterial] { fixed + watched.withLock { $0 } }

  /// Watches `materials` for the pools from now on (after a config reload).
  func watch(_ materials: [TLSMaterial]) {
    watched.withLock { $0 = materials }
    updateGauges()
  }

  func run() async throws {
    updateGauges()
    while !Task.isShuttingDownGracefully {
      do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) } } catch { break }
      _ = materials.map { $0.reloadIfChanged() }
      updateGauges()
    }
  }

  /// Reloads every TLS file now, changed or not.
  func reloadAll() {
    let materials = self.materials
    guard !materials.isEmpty else {
      logger.notice("no TLS files to reload")
      return
    }
    materials.forEach { $0.reloadIfChanged(force: true) }
    updateGauges()
  }

  /// Every certificate it watches and when it expires (`nil`: not read).
  var expiries: [(use: String, notAfter: Date?)] {
    materials.map { ($0.use, $0.notAfter) }
  }

  private func updateGauges() {
    for (use, notAfter) in expiries {
      guard let notAfter else { continue }
      metrics.gauge("certificate_expiry_timestamp_seconds", [("use", use)]).record(notAfter.timeIntervalSince1970)
    }
  }
}
