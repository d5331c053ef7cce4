import Logging
import NIOCore
import Synchronization

/// One replica of a pool, as the data path sees it: an address and, per event loop, one
/// multiplexed HTTP/2 connection to it.
///
/// Calls use the connection of the event loop that accepted the core's call, so a call never
/// leaves its thread.
package final class Endpoint: Sendable, CustomStringConvertible {
  /// How the endpoint came to be in its pool.
  package enum Origin: Sendable, Hashable {
    /// Declared in the config.
    case configured
    /// A replica's registration, named by its membership id.
    case registered(membershipID: String)
    /// An address record of the pool's DNS name.
    case discovered
  }

  /// Where the replica's `AgentHandler` is reached.
  package let address: HostPort
  /// How it joined the pool.
  package let origin: Origin
  private let connections: [ObjectIdentifier: UpstreamConnection]
  /// `address` as text, for metric labels.
  let addressText: String
  /// The number of the TLS setting it was made with (``EndpointFactory/bringUpToDate(_:)``).
  let securityGeneration: Int
  /// Whether the last call recorded here failed: until a success resets it, the pool counts
  /// every outcome (``ReplicaPool/record(_:failed:)``); after it, successes need no lock.
  let hasRecentFailures = Atomic<Bool>(false)
  /// Calls that picked this endpoint and have not ended: the least-request balancer's load.
  let outstanding = Atomic<Int>(0)
  /// How long its calls take, in microseconds: an exponentially weighted moving average (1/8 per
  /// call) of the calls it answered OK; 0 before the first. Updated without a lock: two calls
  /// ending at once on two event loops may lose one sample, which an average can afford.
  let callTimeAverage = Atomic<Int>(0)

  /// Its calls of the last minute, for the status page.
  let recentCalls = Mutex(CallWindow())

  /// Adds an attempt that ended on this endpoint at `endedAt` after `took`: in its calls of
  /// the last minute, and, answered OK, in ``callTimeAverage`` (a replica failing fast must not
  /// look fast).
  func addAttempt(took: Duration, endedAt: ContinuousClock.Instant, ok: Bool) {
    let second = CallWindow.second(of: endedAt)
    let micros = max(1, Int(took.nanoseconds / 1000))
    recentCalls.withLock { $0.add(second: second, micros: micros, ok: ok) }
    guard ok else { return }
    let average = callTimeAverage.load(ordering: .relaxed)
    callTimeAverage.store(average == 0 ? micros : average + (micros - average) / 8, ordering: .relaxed)
  }

  init(
    address: HostPort, origin: Origin, loops: [any EventLoop], config: MeshConfig.Upstream,
    security: UpstreamTLSContext?, securityGeneration: Int = 0, logger: Logger
  ) {
    self.address = address
    self.securityGeneration = securityGeneration
    self.addressText = address.description
    self.origin = origin
    var connections: [ObjectIdentifier: UpstreamConnection] = [:]
    for loop in loops {
      connections[ObjectIdentifier(loop)] = UpstreamConnection(
        eventLoop: loop, address: address, config: config, security: security, logger: logger)
    }
    self.connections = connections
    self.probeConnection = UpstreamConnection(
      eventLoop: loops[0], address: address, config: config, security: security, logger: logger)
  }

  /// The connection to use from `loop`, which must be one of the mesh's event loops.
  func connection(on loop: any EventLoop) -> UpstreamConnection {
    guard let connection = connections[ObjectIdentifier(loop)] else {
      preconditionFailure("event loop \(loop) is not one of the mesh's")
    }
    return connection
  }

  /// Client-side metrics of calls to `path` on this endpoint for `pool`.
  func clientMetrics(pool: ReplicaPool, path: String) -> GRPCCallMetrics {
    pool.metrics.client(pool: pool.name, endpoint: addressText, path: path)
  }

  /// The connection health probes use: one of their own, so that a replica whose connections
  /// are full of callers' streams is seen as busy, not dead (probes never wait for a stream slot
  /// behind calls).
  let probeConnection: UpstreamConnection

  /// Uses `security` for the connections made from now on (a reload changed the pool's
  /// `upstream_tls`); each connection finishes its calls and closes.
  func useTLS(_ security: UpstreamTLSContext?) {
    for connection in connections.values + [probeConnection] {
      connection.eventLoop.execute { connection.useTLS(security) }
    }
  }

  /// Stops new calls on every connection; calls in flight finish.
  func drain() {
    for connection in connections.values + [probeConnection] {
      connection.eventLoop.execute { connection.drain() }
    }
  }

  /// The membership id of a registered replica.
  package var membershipID: String? {
    if case .registered(let id) = origin { return id }
    return nil
  }

  package var description: String {
    switch origin {
    case .configured, .discovered: "\(address)"
    case .registered(let id): "\(address) (\(id))"
    }
  }
}
