import NIOHPACK
import NIOHTTP2

extension NIOHTTP2Handler.ConnectionConfiguration {
  /// HTTP/2 settings for both sides of the data path: `maxConcurrentStreams` from config, the
  /// message limit as the largest frame budget, and a 1 MiB connection window.
  static func mesh(_ upstream: MeshConfig.Upstream) -> Self {
    var configuration = Self()
    configuration.initialSettings = [
      HTTP2Setting(parameter: .maxConcurrentStreams, value: upstream.maxConcurrentStreams),
      HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
      HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
    ]
    configuration.targetWindowSize = 1 << 20
    return configuration
  }
}

extension NIOHTTP2Handler.ConnectionConfiguration {
  /// Settings of connections to replicas: as ``mesh(_:)``, without validating the header
  /// blocks the mesh sends (they were validated when the caller sent them).
  static func meshUpstream(_ upstream: MeshConfig.Upstream) -> Self {
    var configuration = mesh(upstream)
    configuration.headerBlockValidation = .disabled
    return configuration
  }
}

extension NIOHTTP2Handler.StreamConfiguration {
  /// Per-stream settings for both sides of the data path.
  static func mesh(_ upstream: MeshConfig.Upstream) -> Self {
    var configuration = Self()
    configuration.targetWindowSize = 1 << 20
    configuration.streamResetFrameRateLimit.maximumCount = 10_000
    return configuration
  }
}
