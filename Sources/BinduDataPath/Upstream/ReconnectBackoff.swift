import NIOCore

/// How long a connection to a replica waits after a failed dial before it dials again: 100 ms,
/// doubled after each failure up to `upstream.reconnect_max_backoff`, and 100 ms again once a
/// dial succeeds (or the TLS to the replica changes).
struct ReconnectBackoff {
  /// The first wait.
  static let initial = TimeAmount.milliseconds(100)
  /// The wait after the next failure.
  private(set) var next = initial

  /// A dial failed: the wait before the next one (at most `limit`); the one after doubles.
  mutating func failed(limit: TimeAmount) -> TimeAmount {
    let wait = min(next, limit)
    next = min(next * 2, limit)
    return wait
  }

  /// A dial succeeded, or what it dials with changed: the next failure waits ``initial``.
  mutating func reset() { next = Self.initial }
}
