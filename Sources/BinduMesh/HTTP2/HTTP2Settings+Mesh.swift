import NIOHPACK
import NIOHTTP2

extension NIOHTTP2Handler.ConnectionConfiguration {
  /// The flow-control window the mesh offers its peers, per stream and per connection (1 MiB).
  static let meshWindowSize = 1 << 20

  /// HTTP/2 settings for both sides of the data path: `maxConcurrentStreams` from config, the
  /// message limit as the largest frame budget, and ``meshWindowSize`` per stream.
  static func mesh(_ upstream: MeshConfig.Upstream) -> Self {
    var configuration = Self()
    configuration.initialSettings = [
      HTTP2Setting(parameter: .maxConcurrentStreams, value: upstream.maxConcurrentStreams),
      HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
      HTTP2Setting(parameter: .initialWindowSize, value: meshWindowSize),
    ]
    return configuration
  }

  /// Settings of connections to replicas: as ``mesh(_:)``, with no server push, and without
  /// validating header blocks and content lengths the caller's side has validated (the
  /// replica's answers reach a caller whose own HTTP/2 stack checks them).
  static func meshUpstream(_ upstream: MeshConfig.Upstream) -> Self {
    var configuration = mesh(upstream)
    configuration.initialSettings.append(HTTP2Setting(parameter: .enablePush, value: 0))
    configuration.headerBlockValidation = .disabled
    configuration.contentLengthValidation = .disabled
    return configuration
  }
}

extension NIOHTTP2Handler.StreamConfiguration {
  /// Per-stream settings for both sides of the data path: room for many resets (a proxy
  /// cancels a stream for every call its caller cancels).
  static func mesh(_ upstream: MeshConfig.Upstream) -> Self {
    var configuration = Self()
    configuration.streamResetFrameRateLimit.maximumCount = 10_000
    return configuration
  }
}
