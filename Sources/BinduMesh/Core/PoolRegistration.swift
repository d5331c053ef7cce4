import Synchronization

/// The state of one pool's registration with the core, and the replicas waiting on it.
public final class PoolRegistration: Sendable {
  /// What the core said last.
  public enum Phase: Sendable, Equatable {
    /// Not registered yet; `lastError` says why when an attempt failed.
    case pending(lastError: String?)
    /// The core accepted the agent.
    case registered(agentID: String, did: String, agentURL: String)
    /// The core refused the agent's config.
    case refused(String)
  }

  /// The pool's directory entry.
  public let entry: PoolDirectory.Entry
  /// The definition registered.
  public let definition: AgentDefinition

  private struct State {
    var phase: Phase = .pending(lastError: nil)
    /// What the last successful registration returned, kept while registering again.
    var identity: (did: String, agentURL: String)?
    var registrations = 0
    var waiters: [UInt64: CheckedContinuation<Phase, Never>] = [:]
    var nextWaiter: UInt64 = 0
    /// Waiters whose time ran out before they were stored.
    var expired: Set<UInt64> = []
  }

  private let state = Mutex(State())

  init(entry: PoolDirectory.Entry, definition: AgentDefinition) {
    self.entry = entry
    self.definition = definition
  }

  /// The current phase.
  public var phase: Phase { state.withLock { $0.phase } }

  /// How many times the core accepted this pool (1 + registrations after a core restart).
  public var registrations: Int { state.withLock { $0.registrations } }

  /// The DID and URL of the last accepted registration.
  public var identity: (did: String, agentURL: String)? { state.withLock { $0.identity } }

  func update(_ phase: Phase) {
    if case .registered = phase { entry.pool.setRegisteredWithCore(true) } else { entry.pool.setRegisteredWithCore(false) }
    let waiters = state.withLock { state -> [CheckedContinuation<Phase, Never>] in
      state.phase = phase
      if case .registered(_, let did, let url) = phase {
        state.identity = (did, url)
        state.registrations += 1
      }
      guard phase.isSettled else { return [] }
      defer { state.waiters.removeAll() }
      return Array(state.waiters.values)
    }
    waiters.forEach { $0.resume(returning: phase) }
  }

  /// Waits until the core has accepted or refused the agent, at most `timeout`; a pool that was
  /// accepted before answers at once with what it was given.
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
    return await withCheckedContinuation { continuation in
      let settledPhase = state.withLock { state -> Phase? in
        if state.phase.isSettled { return state.phase }
        if state.expired.remove(id) != nil { return state.phase }
        state.waiters[id] = continuation
        return nil
      }
      if let settledPhase { continuation.resume(returning: settledPhase) }
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
  var isSettled: Bool {
    switch self {
    case .pending: false
    case .registered, .refused: true
    }
  }
}
