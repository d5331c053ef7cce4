import BinduHTTP2
import BinduMeshConfig

extension HTTP2Connection.Configuration {
  /// Settings of a connection from a caller: `callbacks.max_concurrent_streams` and
  /// `max_buffered_bytes`, ``meshWindowSize`` per stream and for the connection, and
  /// swift-nio-http2's denial-of-service limits (``HTTP2Guards``).
  static func caller(_ callbacks: MeshConfig.Callbacks) -> Self {
    var configuration = Self(maxConcurrentStreams: callbacks.maxConcurrentStreams, windowSize: meshWindowSize)
    configuration.guards.stalledWindowTimeout = callbacks.stalledWindowTimeout?.timeAmount
    configuration.maxBufferedBytes = callbacks.maxBufferedBytes
    return configuration
  }

  /// Settings of a connection to a replica: looser guards than a caller's, since a replica (which
  /// the mesh chose) that refuses or resets many streams under load is busy, not hostile. No
  /// cap on buffered bytes: answers wait for slow callers per stream (bounded by the stream's
  /// window and `callbacks.stalled_window_timeout`), and holding the connection's window back
  /// would stall every other caller's answers on it.
  static func replica(_ upstream: MeshConfig.Upstream) -> Self {
    var configuration = Self(maxConcurrentStreams: upstream.maxConcurrentStreams, windowSize: meshWindowSize)
    configuration.guards = .chosenPeer
    return configuration
  }
}
