import BinduMeshConfig
import Logging
import NIOCore
import Synchronization

/// Makes a pool's endpoints: what an endpoint needs that the pool itself does not (the event
/// loops to keep a connection on, the upstream limits in force, TLS to the replicas).
///
/// A reload may change the TLS: ``useTLS(_:)``, then ``bringUpToDate(_:)`` for an endpoint made
/// at that very moment, once it is in the pool.
final class EndpointFactory: Sendable {
  /// A TLS setting, with a number that changes with it.
  private struct Security {
    var value: UpstreamTLSContext?
    var generation = 0
  }

  private let loops: [any EventLoop]
  private let settings: LiveSettings
  private let security: Mutex<Security>
  private let logger: Logger

  init(loops: [any EventLoop], settings: LiveSettings, security: UpstreamTLSContext?, logger: Logger) {
    self.loops = loops
    self.settings = settings
    self.security = Mutex(Security(value: security))
    self.logger = logger
  }

  /// A new endpoint for `address` with the limits and TLS in force.
  func make(_ address: HostPort, origin: Endpoint.Origin) -> Endpoint {
    let (tls, generation) = security.withLock { ($0.value, $0.generation) }
    return Endpoint(
      address: address, origin: origin, loops: loops, config: settings.current.values.upstream, security: tls,
      securityGeneration: generation, logger: logger)
  }

  /// Gives `endpoint` the TLS in force if a reload changed it since the endpoint was made: the
  /// pool calls it once the endpoint is in its list, which a reload goes through.
  func bringUpToDate(_ endpoint: Endpoint) {
    let (tls, current) = security.withLock { ($0.value, $0.generation == endpoint.securityGeneration) }
    if !current { endpoint.useTLS(tls) }
  }

  /// Uses `security` for the endpoints made from now on.
  func useTLS(_ security: UpstreamTLSContext?) {
    self.security.withLock {
      $0.value = security
      $0.generation += 1
    }
  }
}
