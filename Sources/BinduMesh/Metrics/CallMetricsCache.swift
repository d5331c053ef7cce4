import Synchronization

/// The call metrics of one pool or one endpoint, by `:path`: a lookup keyed by the path alone,
/// in front of ``MeshMetrics``' lookup by the whole label set, for the per-call path.
final class CallMetricsCache: Sendable {
  private let byPath = Mutex<[String: GRPCCallMetrics]>([:])

  /// The metrics of `path`, made by `make` the first time.
  func metrics(path: String, make: () -> GRPCCallMetrics) -> GRPCCallMetrics {
    if let known = byPath.withLock({ $0[path] }) { return known }
    let made = make()
    byPath.withLock { $0[path] = made }
    return made
  }
}
