import BinduMeshConfig
import Logging

/// Health, membership and rotation: what moves endpoints in and out of the pool. Every change
/// of rotation goes through ``ReplicaPool/withState(_:)``, so calls waiting in the queue get
/// the endpoints it frees.
extension ReplicaPool {
  // MARK: Health

  /// Takes in the result of an active probe of `endpoint`.
  package func observeProbe(_ endpoint: Endpoint, passed: Bool, message: String) {
    (passed ? probesPassed : probesFailed).increment()
    let now = ContinuousClock.now
    let change = withState { $0.probe(endpoint, passed: passed, message: message, now: now) }
    if let change {
      let inRotation = change.inRotation(at: now)
      logger.log(
        level: inRotation ? .notice : .warning,
        inRotation ? "replica in rotation" : "replica out of rotation: health check failing",
        metadata: ["mesh.replica": "\(endpoint)", "mesh.state": "\(change.stateName(at: now))", "mesh.probe": "\(message)"])
    }
  }

  /// Ends ejections whose time is up.
  package func expireEjections() {
    let now = ContinuousClock.now
    let returned = withState { $0.expireEjections(now: now) }
    for endpoint in returned {
      logger.notice("replica ejection over", metadata: ["mesh.replica": "\(endpoint)"])
    }
  }

  // MARK: Membership

  /// Adds a replica at a fixed address.
  package func addConfigured(_ address: HostPort) {
    add(endpointFactory.make(address, origin: .configured))
  }

  /// Makes the endpoints from DNS exactly `addresses`: new ones join, missing ones drain.
  package func setDiscovered(_ addresses: [HostPort]) -> (added: [Endpoint], removed: [Endpoint]) {
    setEndpoints(.discovered, to: addresses)
  }

  /// Adds a registered replica, unless its config conflicts with the pool's.
  package func join(membershipID: String, endpoint: Endpoint, definition: AgentDefinition) -> JoinResult {
    let now = ContinuousClock.now
    let result = withState { state -> JoinResult in
      if let existing = state.definition, let reason = existing.conflict(with: definition) {
        return .refused(reason)
      }
      if state.definition == nil { state.definition = definition }
      state.addMember(membershipID, endpoint: endpoint, now: now)
      return .joined
    }
    if case .joined = result { endpointFactory.bringUpToDate(endpoint) }
    return result
  }

  /// Takes back a member kept across a mesh restart, with its membership id; like a new
  /// endpoint, it takes calls after its first passing probe.
  package func restore(membershipID: String, address: HostPort) -> Endpoint {
    let endpoint = makeRegisteredEndpoint(address, membershipID: membershipID)
    let now = ContinuousClock.now
    withState { $0.addMember(membershipID, endpoint: endpoint, now: now) }
    endpointFactory.bringUpToDate(endpoint)
    return endpoint
  }

  /// The registered members (membership id, address), by id: what the state file keeps.
  package var registeredMembers: [(id: String, address: HostPort)] {
    state.withLock { state in
      state.members.map { (id: $0.key, address: $0.value.endpoint.address) }.sorted { $0.id < $1.id }
    }
  }

  /// Takes `definition` when the pool has none (a declared pool without a config, restored).
  package func adopt(_ definition: AgentDefinition) {
    state.withLock { state in
      if state.definition == nil { state.definition = definition }
    }
  }

  /// Makes an endpoint for a registering replica (to probe before it joins).
  package func makeRegisteredEndpoint(_ address: HostPort, membershipID: String) -> Endpoint {
    endpointFactory.make(address, origin: .registered(membershipID: membershipID))
  }

  /// Removes the other members at `membershipID`'s address: a replica that registered again
  /// (after its own restart, or after losing its heartbeats to a partition) is one replica, and
  /// its earlier membership would keep a second share of the calls. Their connections drain;
  /// their ids.
  package func replaceMembers(at address: HostPort, with membershipID: String) -> [String] {
    let now = ContinuousClock.now
    let removed = withState { $0.removeMembers(at: address, except: membershipID, now: now) }
    removed.forEach { $0.endpoint.drain() }
    return removed.map(\.id)
  }

  /// Drains or undrains by hand the endpoints at `address` (``PoolState/setDrained(_:at:now:)``);
  /// how many there were.
  package func setDrained(_ drain: Bool, at address: HostPort) -> Int {
    let now = ContinuousClock.now
    let found = withState { $0.setDrained(drain, at: address, now: now) }
    for endpoint in found {
      logger.notice(
        drain ? "replica drained by hand: no new calls, calls in flight finish" : "replica undrained by hand",
        metadata: ["mesh.replica": "\(endpoint)"])
    }
    return found.count
  }

  /// Marks a member alive; `false` when the id is not a member.
  package func heartbeat(membershipID: String) -> Bool {
    state.withLock { state in
      guard state.members[membershipID] != nil else { return false }
      state.members[membershipID]!.liveness.heartbeat(at: ContinuousClock.now)
      return true
    }
  }

  /// Whether `membershipID` is a member of this pool.
  package func hasMember(_ membershipID: String) -> Bool { state.withLock { $0.members[membershipID] != nil } }

  /// Removes a member; its connections drain. `false` when the id is not a member.
  @discardableResult
  package func leave(membershipID: String) -> Bool {
    let removed = state.withLock { $0.removeMember(membershipID, now: .now) }
    removed?.drain()
    return removed != nil
  }

  /// Removes members with neither a heartbeat nor a passing probe within `timeout`.
  package func evict(silentFor timeout: Duration) -> State.Eviction {
    let now = ContinuousClock.now
    let found = state.withLock { $0.evict(silentFor: timeout, now: now) }
    found.evicted.forEach { $0.drain() }
    return found
  }

  /// Forgets the definition of a pool made by registration when the core refused it and no
  /// replica is left, so a corrected replica can define it again.
  package func forgetDefinitionIfUnused(_ definition: AgentDefinition) {
    state.withLock { state in
      if !declared, state.members.isEmpty, state.definition == definition { state.definition = nil }
    }
  }

  // MARK: Internals

  /// Adds an endpoint just made (``EndpointFactory/make(_:origin:)``); one made while a reload
  /// changed the TLS to the replicas takes the new TLS.
  func add(_ endpoint: Endpoint) {
    let now = ContinuousClock.now
    withState { $0.insert(endpoint, now: now) }
    endpointFactory.bringUpToDate(endpoint)
  }

}

extension ReplicaPool {
  /// Members this mesh saw alive since `instant`.
  package func membersSeenHere(since instant: ContinuousClock.Instant) -> [String] {
    state.withLock { state in
      state.members.compactMap { id, member in member.liveness.seenHere.map { $0 > instant } == true ? id : nil }
    }
  }

  /// Applies sightings of members by other meshes: how long ago, by id (ids of other pools are
  /// ignored).
  package func applySightings(_ ages: [String: Duration]) {
    guard !ages.isEmpty else { return }
    let now = ContinuousClock.now
    state.withLock { state in
      for (id, age) in ages where state.members[id] != nil {
        state.members[id]!.liveness.seenElsewhere(at: now - age)
      }
    }
  }
}
