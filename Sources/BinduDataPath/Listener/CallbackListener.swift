import BinduHTTP2
import BinduMeshConfig
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// The listener the core dials for one pool: HTTP/2 (gRPC), with TLS when configured; every
/// stream is a ``ProxyCall``, routed by the connection's ``CallerStreams``.
///
/// Bind it with ``bind(pool:address:group:settings:security:logger:)``; ``shutdown(grace:)`` stops
/// accepting, sends GOAWAY on every connection and waits for calls in flight, at most `grace`.
package final class CallbackListener: Sendable {
  /// The pool this listener serves.
  let pool: ReplicaPool
  /// The address actually bound (with the real port when 0 was asked).
  package let localAddress: HostPort
  private let quiescing: ServerQuiescingHelper
  private let logger: Logger
  /// A second descriptor of the listening socket, to hand to a new process (``HandOver``);
  /// closed with the listener, so that a closed listener leaves no socket queueing connections.
  private let handOverSocket: Atomic<CInt>
  /// The TLS of connections accepted from now on (a reload may change it).
  private let security: SecurityBox

  /// Holds the listener's TLS, read by each connection accepted.
  private final class SecurityBox: Sendable {
    private let value: Mutex<ListenerTLSContext?>
    init(_ value: ListenerTLSContext?) { self.value = Mutex(value) }
    var current: ListenerTLSContext? { value.withLock { $0 } }
    func set(_ new: ListenerTLSContext?) { value.withLock { $0 = new } }
  }

  private init(
    pool: ReplicaPool, localAddress: HostPort, quiescing: ServerQuiescingHelper, handOverSocket: CInt,
    security: SecurityBox, logger: Logger
  ) {
    self.pool = pool
    self.security = security
    self.localAddress = localAddress
    self.quiescing = quiescing
    self.handOverSocket = Atomic(handOverSocket)
    self.logger = logger
  }

  /// Uses `security` (or plaintext) for the connections accepted from now on; connections open
  /// keep theirs.
  package func useTLS(_ security: ListenerTLSContext?) {
    self.security.set(security)
  }

  /// The listening socket for a new process to take over; it stays open until ``shutdown(grace:)``.
  package var socketForHandOver: CInt { handOverSocket.load(ordering: .relaxed) }

  package static func bind(
    pool: ReplicaPool,
    address: HostPort,
    group: MultiThreadedEventLoopGroup,
    settings: LiveSettings,
    security: ListenerTLSContext?,
    inherited: CInt? = nil,
    logger: Logger
  ) async throws -> CallbackListener {
    let quiescing = ServerQuiescingHelper(group: group)
    let logger = logger.with("mesh.pool", pool.name)
    // The mesh opens the socket itself (or takes the one a previous process handed over), so
    // that it can hand it on in turn, with the connections waiting in its queue.
    let socket = try inherited ?? ListeningSocket.open(address)
    let spare = dup(socket)
    guard spare >= 0 else {
      let error = SocketError.last("dup")
      close(socket)  // opened here, or handed over for this listener alone: either way it is ours
      throw error
    }
    let current = SecurityBox(security)
    let callerMetrics = CallerConnectionMetrics(pool: pool.name, metrics: pool.metrics)
    let channel: any Channel
    do {
      channel = try await ServerBootstrap(group: group)
        .serverChannelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
          }
        }
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            if let security = current.current {
              try sync.addHandler(NIOSSLServerHandler(context: security.material.context))
              try sync.addHandler(
                PeerIdentityHandler(allowed: security.allowedIdentities, peerRole: "caller", logger: logger))
            }
            let caller = CallerStreams(
              pool: pool, metrics: callerMetrics, settings: settings, eventLoop: channel.eventLoop, logger: logger)
            let callers = settings.current.values.callers
            let connection = HTTP2Connection(mode: .server, configuration: .caller(callers), delegate: caller)
            caller.connection = connection
            try sync.addHandler(connection)
          }
        }
        .withBoundSocket(socket)
        .get()
    } catch {
      close(spare)
      throw error
    }
    guard let bound = channel.localAddress, let port = bound.port else {
      channel.close(promise: nil)
      close(spare)
      throw SocketError(operation: "listen \(address)", message: "no local address")
    }
    let local = HostPort(host: bound.ipAddress ?? address.host, port: port)
    logger.info(
      inherited == nil ? "callback listener ready" : "callback listener taken over from the previous process",
      metadata: ["mesh.listen": "\(local)", "mesh.tls": "\(security != nil)"])
    return CallbackListener(
      pool: pool, localAddress: local, quiescing: quiescing, handOverSocket: spare, security: current, logger: logger)
  }

  /// Stops accepting and lets open calls finish, waiting at most `grace`.
  package func shutdown(grace: Duration) async {
    let spare = handOverSocket.exchange(-1, ordering: .relaxed)
    if spare >= 0 { close(spare) }
    let promise = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
    quiescing.initiateShutdown(promise: promise)
    let finished = await withTaskGroup(of: Bool.self) { group in
      group.addTask { (try? await promise.futureResult.get()) != nil }
      group.addTask {
        try? await Task.sleep(for: grace)
        return false
      }
      let first = await group.next() ?? false
      group.cancelAll()
      return first
    }
    if finished {
      logger.info("callback listener closed")
    } else {
      logger.warning("calls still open after the grace period", metadata: ["mesh.grace": "\(grace)"])
    }
  }
}
