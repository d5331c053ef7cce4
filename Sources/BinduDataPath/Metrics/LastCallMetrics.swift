/// The call metrics of the last method called on one connection. Calls on a connection mostly
/// share one method, so most find their metrics here, without the lock of ``MeshMetrics``' own
/// lookup, which makes each label set once and keeps it.
struct LastCallMetrics {
  private var last: (path: String, metrics: GRPCCallMetrics)?

  /// The metrics of calls to `path`: the last ones when the path is the same, else `lookUp`'s.
  mutating func metrics(path: String, lookUp: (String) -> GRPCCallMetrics) -> GRPCCallMetrics {
    if let last, last.path == path { return last.metrics }
    let metrics = lookUp(path)
    last = (path, metrics)
    return metrics
  }
}
