import BinduMeshConfig

/// What a config reload changes in a running pool: its policy and its replicas at fixed
/// addresses. Calls in flight keep the endpoint they were given.
extension ReplicaPool {
  /// Takes a reloaded policy for the calls, probes and ejections that come next
  /// (``PoolState/apply(_:now:)``); `false` when it is the one in force.
  @discardableResult
  package func apply(_ policy: MeshConfig.Policy) -> Bool {
    let now = ContinuousClock.now
    let changed = withState { state -> Bool in
      guard state.policy != policy else { return false }
      state.apply(policy, now: now)
      return true
    }
    if changed { policyGeneration.add(1, ordering: .releasing) }
    return changed
  }

  /// The retry policy as a caller's connection keeps it, with the generation it was read at.
  struct RetrySnapshot: Sendable {
    var generation: Int
    var retry: MeshConfig.Retry
  }

  /// The retry policy in force now.
  var retrySnapshot: RetrySnapshot {
    let generation = policyGeneration.load(ordering: .acquiring)
    return RetrySnapshot(generation: generation, retry: policy.retry)
  }

  /// Brings `snapshot` up to date when a reload changed the policy since it was read (one
  /// atomic load otherwise).
  func refreshRetry(_ snapshot: inout RetrySnapshot) {
    guard policyGeneration.load(ordering: .acquiring) != snapshot.generation else { return }
    snapshot = retrySnapshot
  }

  /// Uses `security` (or plaintext) to the replicas from now on: every endpoint's connections
  /// finish their calls and close, and the next calls dial with the new settings.
  package func useTLS(_ security: UpstreamTLSContext?) {
    endpointFactory.useTLS(security)
    endpoints.forEach { $0.useTLS(security) }
  }

  /// Makes the replicas declared at fixed addresses exactly `addresses`: new ones join (after a
  /// passing probe, as at start), missing ones drain (no new calls, calls in flight finish).
  package func setConfigured(_ addresses: [HostPort]) -> (added: [Endpoint], removed: [Endpoint]) {
    setEndpoints(.configured, to: addresses)
  }

  /// Makes the endpoints of `origin` (configured or discovered) exactly `addresses`: new ones
  /// join, missing ones drain.
  func setEndpoints(_ origin: Endpoint.Origin, to addresses: [HostPort]) -> (added: [Endpoint], removed: [Endpoint]) {
    let wanted = Set(addresses)
    let (have, removed) = state.withLock { state -> (Set<HostPort>, [Endpoint]) in
      let same = state.endpoints.filter { $0.origin == origin }
      let removed = same.filter { !wanted.contains($0.address) }
      state.remove(removed, now: .now)
      return (Set(same.map(\.address)), removed)
    }
    var added: [Endpoint] = []
    for address in addresses where !have.contains(address) && !added.contains(where: { $0.address == address }) {
      added.append(endpointFactory.make(address, origin: origin))
    }
    added.forEach(add)
    removed.forEach { $0.drain() }
    return (added, removed)
  }
}
