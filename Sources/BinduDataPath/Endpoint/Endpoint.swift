import BinduMeshConfig
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
  package func clientMetrics(pool: ReplicaPool, path: String) -> GRPCCallMetrics {
    pool.metrics.client(pool: pool.name, endpoint: addressText, path: path)
  }

  /// The connection health probes use: one of their own, so that a replica whose connections
  /// are full of callers' streams is seen as busy, not dead (probes never wait for a stream slot
  /// behind calls).
  package let probeConnection: UpstreamConnection

  /// Uses `security` for the connections made from now on (a reload changed the pool's
  /// `upstream_tls`); each connection finishes its calls and closes.
  func useTLS(_ security: UpstreamTLSContext?) {
    for connection in connections.values + [probeConnection] {
      connection.eventLoop.execute { connection.useTLS(security) }
    }
  }

  /// Stops new calls on every connection; calls in flight finish.
  package func drain() {
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
