import Synchronization

/// The call metrics of one pool or one endpoint, by `:path`: a lookup keyed by the path alone,
/// in front of ``MeshMetrics``' lookup by the whole label set, for the per-call path. Paths
/// outside the contract share one entry (``GRPCCallMetrics/labelPath(_:)``).
final class CallMetricsCache: Sendable {
  private let byPath = Mutex<[String: GRPCCallMetrics]>([:])

  /// The metrics of `path`, made by `make` (given the path to label them with) the first time.
  func metrics(path: String, make: (String) -> GRPCCallMetrics) -> GRPCCallMetrics {
    if let known = byPath.withLock({ $0[path] }) { return known }
    let label = GRPCCallMetrics.labelPath(path)
    if label != path, let shared = byPath.withLock({ $0[label] }) { return shared }
    let made = make(label)
    byPath.withLock { $0[label] = made }
    return made
  }
}
