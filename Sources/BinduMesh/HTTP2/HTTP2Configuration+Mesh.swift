extension HTTP2Connection.Configuration {
  /// The flow-control window the mesh offers its peers, per stream and per connection (1 MiB).
  static let meshWindowSize = 1 << 20

  /// Settings of both sides of the data path: `maxConcurrentStreams` from config and
  /// ``meshWindowSize`` per stream and for the connection. Callers get swift-nio-http2's
  /// denial-of-service limits (``HTTP2Guards``); a replica, which the mesh chose, gets looser
  /// ones, since one that refuses or resets many streams under load is busy, not hostile.
  static func mesh(_ upstream: MeshConfig.Upstream, mode: HTTP2Connection.Mode) -> Self {
    var configuration = Self(maxConcurrentStreams: upstream.maxConcurrentStreams, windowSize: meshWindowSize)
    if mode == .client {
      configuration.guards.maxResets = 10_000
      configuration.guards.maxEmptyDataInARow = 1_000
      configuration.guards.maxControlFrames = 100_000
    }
    return configuration
  }
}
