import BinduMeshConfig
import Foundation
import Synchronization

/// The state of one pool's registration with one core, and the replicas waiting on it.
package final class PoolRegistration: Sendable {
  /// What the core said last.
  package enum Phase: Sendable, Equatable {
    /// Not registered yet; `lastError` says why when an attempt failed.
    case pending(lastError: String?)
    /// The core accepted the agent.
    case registered(agentID: String, did: String, agentURL: String)
    /// The core refused the agent's config.
    case refused(String)
  }

  /// The pool's directory entry.
  package let entry: PoolDirectory.Entry
  /// The definition registered.
  package let definition: AgentDefinition
  /// The core.
  package let core: HostPort
  /// The config JSON sent to this core (its `agent_url` in place of `deployment.url`).
  package let configJSON: String

  private struct State {
    var phase: Phase = .pending(lastError: nil)
    /// What the last successful registration returned, kept while registering again.
    var identity: (did: String, agentURL: String)?
    var registrations = 0
    /// Since when the core has known the agent without a break.
    var registeredSince: Date?
    var waiters: [UInt64: CheckedContinuation<Phase, Never>] = [:]
    var nextWaiter: UInt64 = 0
    /// Waiters whose time ran out before they were stored.
    var expired: Set<UInt64> = []
  }

  private let state = Mutex(State())
  private let retirement: AsyncStream<Never>
  private let retirementContinuation: AsyncStream<Never>.Continuation
  private let retiredFlag = Atomic<Bool>(false)
  private let ended: AsyncStream<Never>
  private let endedContinuation: AsyncStream<Never>.Continuation

  init(entry: PoolDirectory.Entry, definition: AgentDefinition, core: HostPort, configJSON: String) {
    self.entry = entry
    self.definition = definition
    self.core = core
    self.configJSON = configJSON
    (retirement, retirementContinuation) = AsyncStream.makeStream()
    (ended, endedContinuation) = AsyncStream.makeStream()
  }

  /// Ends this registration (its pool was removed or moved by a reload): the registrar stops
  /// heartbeating and unregisters the agent.
  func retire() {
    retiredFlag.store(true, ordering: .relaxed)
    retirementContinuation.finish()
  }

  /// Whether ``retire()`` was called.
  var isRetired: Bool { retiredFlag.load(ordering: .relaxed) }

  /// Returns once the registration is retired, or the task is cancelled.
  func untilRetired() async {
    for await _ in retirement {}
  }

  /// Marks the registrar's work on this registration over (after unregistering a retired one).
  func end() { endedContinuation.finish() }

  /// Returns once the registrar's work on this registration is over, or the task is cancelled.
  func untilEnded() async {
    for await _ in ended {}
  }

  /// The current phase.
  package var phase: Phase { state.withLock { $0.phase } }

  /// How many times the core accepted this pool (1 + registrations after a core restart).
  package var registrations: Int { state.withLock { $0.registrations } }

  /// Since when the core has known the agent without a break; `nil` while it does not.
  package var registeredSince: Date? { state.withLock { $0.registeredSince } }

  /// The DID and URL of the last accepted registration.
  package var identity: (did: String, agentURL: String)? { state.withLock { $0.identity } }

  /// The last error of a registration not (or no longer) accepted.
  package var lastError: String? {
    switch phase {
    case .pending(let error): error
    case .refused(let error): error
    case .registered: nil
    }
  }

  func update(_ phase: Phase) {
    let (waiters, change) = state.withLock { state -> ([CheckedContinuation<Phase, Never>], Bool?) in
      let change = state.phase.isRegistered == phase.isRegistered ? nil : phase.isRegistered
      state.phase = phase
      if case .registered(_, let did, let url) = phase {
        state.identity = (did, url)
        state.registrations += 1
        if state.registeredSince == nil { state.registeredSince = Date() }
      } else {
        state.registeredSince = nil
      }
      guard phase.isSettled else { return ([], change) }
      defer { state.waiters.removeAll() }
      return (Array(state.waiters.values), change)
    }
    if let change { entry.pool.coreRegistrationChanged(registered: change) }
    waiters.forEach { $0.resume(returning: phase) }
  }

  /// Waits until the core has accepted or refused the agent, at most `timeout` or until the task
  /// is cancelled; a pool that was accepted before answers at once with what it was given.
  func settled(within timeout: Duration) async -> Phase {
    if let known = state.withLock({ state -> Phase? in
      if state.phase.isSettled { return state.phase }
      if let identity = state.identity { return .registered(agentID: "", did: identity.did, agentURL: identity.agentURL) }
      return nil
    }) {
      return known
    }
    let id = state.withLock { state -> UInt64 in
      state.nextWaiter += 1
      return state.nextWaiter
    }
    let timer = Task {
      guard (try? await Task.sleep(for: timeout)) != nil else { return }
      self.resumeWaiter(id)
    }
    defer { timer.cancel() }
    return await withTaskCancellationHandler {
      await withCheckedContinuation { continuation in
        let settledPhase = state.withLock { state -> Phase? in
          if state.phase.isSettled { return state.phase }
          if state.expired.remove(id) != nil { return state.phase }
          state.waiters[id] = continuation
          return nil
        }
        if let settledPhase { continuation.resume(returning: settledPhase) }
      }
    } onCancel: {
      self.resumeWaiter(id)
    }
  }

  private func resumeWaiter(_ id: UInt64) {
    let (waiter, phase) = state.withLock { state in
      let waiter = state.waiters.removeValue(forKey: id)
      if waiter == nil { state.expired.insert(id) }
      return (waiter, state.phase)
    }
    waiter?.resume(returning: phase)
  }
}

extension PoolRegistration.Phase {
  var isRegistered: Bool {
    if case .registered = self { return true }
    return false
  }

  var isSettled: Bool {
    switch self {
    case .pending: false
    case .registered, .refused: true
    }
  }
}
