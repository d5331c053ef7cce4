extension HTTP2Connection.Configuration {
  /// The flow-control window the mesh offers its peers, per stream and per connection (1 MiB).
  static let meshWindowSize = 1 << 20

  /// Settings of both sides of the data path: `maxConcurrentStreams` from config and
  /// ``meshWindowSize`` per stream and for the connection.
  static func mesh(_ upstream: MeshConfig.Upstream) -> Self {
    Self(maxConcurrentStreams: upstream.maxConcurrentStreams, windowSize: meshWindowSize)
  }
}
