import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// Whether this process handed its work to a new one: then it neither writes the state file
/// nor unregisters from the cores as it stops (the new process owns both).
final class HandedOver: Sendable {
  private let flag = Atomic<Bool>(false)
  var value: Bool { flag.load(ordering: .relaxed) }
  func set() { flag.store(true, ordering: .relaxed) }
}

/// Answers hand-over requests while the mesh runs (``HandOverListener``); on one, closes the
/// registry and admin listeners, hands over the callback listeners' sockets and stops the mesh
/// (SIGTERM to itself, the usual graceful shutdown, without unregistering).
struct HandOverService: Service {
  let path: String
  let directory: PoolDirectory
  let handedOver: HandedOver
  /// Closes the registry and admin listeners.
  let closeControlListeners: @Sendable () async -> Void
  let logger: Logger

  func run() async throws {
    let listener: HandOverListener
    do {
      listener = try HandOverListener.start(
        path: path, logger: logger,
        prepare: {
          handedOver.set()
          await closeControlListeners()
          let entries = await directory.all.sorted { $0.pool.name < $1.pool.name }
          let listeners = entries
            .map { (agent: $0.pool.name, address: $0.listenAddress, socket: $0.listener.socketForHandOver) }
            .filter { $0.socket >= 0 }
          var offer = HandOver.Offer(
            pid: getpid(), listeners: listeners.map { .init(agent: $0.agent, address: $0.address.description) })
          offer.inRotation = entries.flatMap { entry in
            entry.pool.endpointStates.filter(\.inRotation).map {
              HandOver.Offer.Endpoint(agent: entry.pool.name, address: $0.endpoint.address.description)
            }
          }
          return (offer, listeners.map(\.socket))
        },
        stop: { kill(getpid(), SIGTERM) })
    } catch {
      logger.warning("hand-over is off: cannot listen for a new process", metadata: ["error": "\(error)"])
      try? await gracefulShutdown()
      return
    }
    try? await gracefulShutdown()
    listener.close()
    if !handedOver.value { unlink(path) }
  }
}

/// Runs a service until the mesh stops, or until ``stop()`` (a hand-over closing the admin
/// listener early).
final class StoppableService: Service, Sendable {
  private let inner: any Service
  private let stopped: AsyncStream<Never>
  private let stopContinuation: AsyncStream<Never>.Continuation

  init(_ inner: any Service) {
    self.inner = inner
    (stopped, stopContinuation) = AsyncStream.makeStream()
  }

  /// Ends the service now (its task is cancelled).
  func stop() { stopContinuation.finish() }

  func run() async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await self.inner.run() }
      group.addTask { for await _ in self.stopped {} }
      try await group.next()
      group.cancelAll()
    }
    // A service that ends makes the service group stop: wait for the mesh's own shutdown.
    try? await gracefulShutdown()
  }
}
