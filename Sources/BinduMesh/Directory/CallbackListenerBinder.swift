import BinduDataPath
import BinduMeshConfig
import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// Binds the pools' callback listeners: where the config asks, on the next free port from
/// `callbacks.first_port`, on the port a restored pool had, or on the socket a previous process
/// handed over (``HandOver``). The ``PoolDirectory`` asks it for the listener of each pool it makes.
final class CallbackListenerBinder: Sendable {
  /// The ports pools without an address of its own take, and the sockets handed over.
  struct Ports {
    /// The next port to try for a pool without an address of its own; 0 when the system picks.
    var next: Int
    /// Listening sockets a previous process handed over, by pool, with the address it bound,
    /// until the pool takes its own.
    var inherited: [String: (address: HostPort, socket: CInt)] = [:]

    /// The next port that `taken` does not hold, counting up from `callbacks.first_port`; 0
    /// (the system picks) when that is 0.
    mutating func take(skipping taken: Set<Int>) -> Int {
      guard next != 0 else { return 0 }
      while taken.contains(next) { next += 1 }
      defer { next += 1 }
      return next
    }
  }

  private let group: MultiThreadedEventLoopGroup
  private let settings: LiveSettings
  private let logger: Logger
  private let ports: Mutex<Ports>

  /// `firstPort` is `callbacks.first_port`; `inherited`, the sockets handed over, by pool.
  init(
    group: MultiThreadedEventLoopGroup, settings: LiveSettings, firstPort: Int,
    inherited: [String: (address: HostPort, socket: CInt)], logger: Logger
  ) {
    self.group = group
    self.settings = settings
    self.logger = logger
    self.ports = Mutex(Ports(next: firstPort, inherited: inherited))
  }

  /// The address for a pool that has none of its own: on `host`, the next port that `taken`
  /// (the ports of the declared pools and of the listeners bound) does not hold; port 0 when
  /// `callbacks.first_port` is 0.
  func nextAddress(host: String, taken: Set<Int>) -> HostPort {
    HostPort(host: host, port: ports.withLock { $0.take(skipping: taken) })
  }

  /// Binds `pool`'s listener at `address`, on the socket handed over for it when there is one.
  /// With `key` (the setting that gave the address), an address another process holds fails
  /// with what holds it (``ListenerConflict``).
  func bind(
    _ pool: ReplicaPool, at address: HostPort, security: ListenerTLSContext?, key: String? = nil
  ) async throws -> CallbackListener {
    do {
      return try await CallbackListener.bind(
        pool: pool, address: address, group: group, settings: settings, security: security,
        inherited: takeInherited(pool: pool.name, address: address), logger: logger)
    } catch let error as MeshError {
      throw error
    } catch let error as SocketError where error.isAddressInUse && address.port != 0 && key != nil {
      let conflict = await ListenerConflict.find(key: key ?? "", address: address)
      throw MeshError.listenerFailed(pool: pool.name, address: address, reason: "\(conflict)")
    } catch {
      throw MeshError.listenerFailed(pool: pool.name, address: address, reason: "\(error)")
    }
  }

  /// Binds the listener of a pool made by registration on `host`, moving on to the next port
  /// when one is taken (at most 8 tries). `taken` is as for ``nextAddress(host:taken:)``.
  func bindDynamic(
    _ pool: ReplicaPool, host: String, taken: @Sendable () async -> Set<Int>, security: ListenerTLSContext?
  ) async throws -> CallbackListener {
    var lastError: (any Error)?
    for _ in 0..<8 {
      let address = nextAddress(host: host, taken: await taken())
      do {
        return try await bind(pool, at: address, security: security)
      } catch {
        lastError = error
        logger.warning(
          "cannot listen for a new pool, trying the next port",
          metadata: ["mesh.pool": "\(pool.name)", "mesh.listen": "\(address)", "error": "\(error)"])
        if address.port == 0 { break }
      }
    }
    throw lastError!
  }

  /// Binds a restored pool's listener on the port it had, or as ``bindDynamic(_:host:taken:security:)``
  /// when that port is taken. (A Bindu core that ran on keeps calling the address it was first
  /// given, whatever it is told; a core started since calls the new one.)
  func bindRestored(
    _ pool: ReplicaPool, port: Int, host: String, taken: @Sendable () async -> Set<Int>,
    security: ListenerTLSContext?
  ) async throws -> CallbackListener {
    do {
      return try await bind(pool, at: HostPort(host: host, port: port), security: security)
    } catch {
      logger.warning(
        """
        cannot listen on a restored pool's port; taking another, which the cores are given. A core that ran on \
        goes on calling the old port until it restarts: free the port and restart the mesh, or restart the core
        """,
        metadata: ["mesh.pool": "\(pool.name)", "mesh.port": "\(port)", "error": "\(error)"])
      return try await bindDynamic(pool, host: host, taken: taken, security: security)
    }
  }

  /// The socket handed over for `pool`, when it listens where the config asks (`address`; any
  /// port for a port of 0); one that does not is closed, and the pool binds its own.
  private func takeInherited(pool: String, address: HostPort) -> CInt? {
    guard let (bound, socket) = ports.withLock({ $0.inherited.removeValue(forKey: pool) }) else { return nil }
    let sameHost = bound.host == address.host || (bound.isWildcard && address.isWildcard)
    guard (address.port == 0 || bound.port == address.port) && sameHost else {
      logger.warning(
        "the listener handed over for this pool is not where the config asks: not taken",
        metadata: ["mesh.pool": "\(pool)", "mesh.handed_over": "\(bound)", "mesh.listen": "\(address)"])
      close(socket)
      return nil
    }
    return socket
  }

  /// Closes the sockets handed over that no pool took (pools no longer in the config).
  func closeUnusedInherited() {
    let unused = ports.withLock { ports in
      defer { ports.inherited = [:] }
      return ports.inherited
    }
    for (pool, (address, socket)) in unused {
      logger.notice(
        "a listener handed over is not in this config: closed", metadata: ["mesh.pool": "\(pool)", "mesh.listen": "\(address)"])
      close(socket)
    }
  }
}
