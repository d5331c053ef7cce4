import BinduDataPath
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// Where this process is in a hand-over to a new one. While it offers its sockets it neither
/// writes the state file nor takes registrations (the new process reads the file); once the new
/// one is ready, the pools it serves stay registered with the cores as this one stops.
final class HandedOver: Sendable {
  private enum Phase { case none, offering, committed(Set<String>) }
  private let phase = Mutex<Phase>(.none)

  /// Whether the state file is this process's to write.
  var writesState: Bool { phase.withLock { if case .none = $0 { true } else { false } } }
  /// Whether registrations are refused for now.
  var refusesRegistrations: Bool { !writesState }
  /// Whether `agent`'s pool stays registered as this process stops (the new one serves it).
  func keepsRegistered(_ agent: String) -> Bool {
    phase.withLock { if case .committed(let agents) = $0 { agents.contains(agent) } else { false } }
  }

  func offer() { phase.withLock { $0 = .offering } }
  func commit(keeping agents: [String]) { phase.withLock { $0 = .committed(Set(agents)) } }
  func abandon() { phase.withLock { $0 = .none } }
}

/// Answers hand-over requests while the mesh runs (``HandOverListener``): hands over the
/// callback listeners' sockets; once the new process is ready, closes the registry and admin
/// listeners and stops the mesh (SIGTERM to itself, the usual graceful shutdown, keeping
/// registered the pools the new process serves).
struct HandOverService: Service {
  let path: String
  let directory: PoolDirectory
  let handedOver: HandedOver
  /// This process's `listening.json`, handed off to the new process with the listeners.
  let listening: ListeningAddresses
  /// Closes the registry and admin listeners.
  let closeControlListeners: @Sendable () async -> Void
  let logger: Logger

  func run() async throws {
    let listener: HandOverListener
    do {
      listener = try HandOverListener.start(path: path, logger: logger, steps: steps)
    } catch {
      logger.warning("hand-over is off: cannot listen for a new process", metadata: ["error": "\(error)"])
      try? await gracefulShutdown()
      return
    }
    try? await gracefulShutdown()
    listener.close()
    if handedOver.writesState { unlink(path) }
  }

  private var steps: HandOverListener.Steps {
    HandOverListener.Steps(
      offer: {
        handedOver.offer()
        let entries = await directory.all.sorted { $0.pool.name < $1.pool.name }
        var listeners: [HandOver.Offer.Listener] = []
        var sockets: [CInt] = []
        for entry in entries {
          // A copy: the listener may close its own while the offer is under way.
          let socket = entry.listener.socketForHandOver
          guard socket >= 0 else { continue }
          let copy = dup(socket)
          guard copy >= 0 else { continue }
          listeners.append(.init(agent: entry.pool.name, address: entry.listenAddress.description))
          sockets.append(copy)
        }
        var offer = HandOver.Offer(pid: getpid(), listeners: listeners)
        offer.inRotation = entries.flatMap { entry in
          entry.pool.endpointStates.filter(\.inRotation).map {
            HandOver.Offer.Endpoint(agent: entry.pool.name, address: $0.endpoint.address.description)
          }
        }
        return (offer, sockets)
      },
      commit: { agents in
        handedOver.commit(keeping: agents)
        listening.handOff()
        await closeControlListeners()
      },
      abandon: { reason in
        handedOver.abandon()
        await directory.persist()
        logger.warning("the new process did not take over: going on serving", metadata: ["reason": "\(reason)"])
      },
      stop: { kill(getpid(), SIGTERM) })
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
