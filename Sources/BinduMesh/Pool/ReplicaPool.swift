import CoreMetrics
import Logging
import NIOCore
import Synchronization

/// The replicas of one agent, and the one place the data path picks from.
///
/// A pool is named by its agent. Endpoints join from the config (static addresses), from DNS, or
/// from registrations (each with a membership id kept alive by heartbeats). Health checks and
/// call outcomes feed each endpoint's ``EndpointHealth``; ``pick(excluding:)`` is the synchronous
/// choice among the endpoints in rotation (least outstanding calls, or round-robin) that the
/// listener makes for every attempt, paired with ``release(_:)`` when the attempt ends.
public final class ReplicaPool: Sendable {
  /// A registered replica's membership.
  struct Member: Sendable {
    var endpoint: Endpoint
    var liveness: MemberLiveness
  }

  private struct State: Sendable {
    var endpoints: [Endpoint] = []
    var health: [ObjectIdentifier: EndpointHealth] = [:]
    /// The endpoints the balancer may pick: in rotation, in `endpoints` order.
    var rotation: [Endpoint] = []
    var roundRobin = RoundRobin()
    var leastRequest = LeastRequest()
    var members: [String: Member] = [:]
    var definition: AgentDefinition?
  }

  /// Result of a replica asking to join.
  public enum JoinResult: Sendable, Equatable {
    /// The replica is in the pool.
    case joined
    /// Its config differs from the pool's; the reason says where.
    case refused(String)
  }

  /// The balancer's answer.
  public enum Pick: Sendable {
    /// Call this endpoint.
    case endpoint(Endpoint)
    /// No endpoint may take the call; the reason names the pool and why.
    case none(String)
  }

  /// An endpoint and its health, for logs, tests and the admin view.
  public struct EndpointState: Sendable {
    public let endpoint: Endpoint
    public let health: EndpointHealth
    public let state: String
    /// For a registered replica, the signal that last showed it alive.
    public let liveness: MemberLiveness.Signal?
  }

  /// What eviction found: members to drop, and members alive by their probes alone.
  struct Eviction: Sendable {
    var evicted: [Endpoint] = []
    var keptByProbes: [Endpoint] = []
  }

  /// The agent's name.
  public let name: String
  /// Whether the pool was declared in the config (it keeps its definition when empty).
  public let declared: Bool
  /// Health checks, ejection and retries of this pool.
  public let policy: MeshConfig.Policy
  /// The mesh's metrics.
  public let metrics: MeshMetrics
  /// Whether every call forwarded is logged.
  let accessLog: Bool
  private let state: Mutex<State>
  private let registeredCores = Atomic<Int>(0)
  private let serverMetricsByPath = CallMetricsCache()
  private let ejectionsCounter: Counter
  private let probesPassed: Counter
  private let probesFailed: Counter
  private let callsInFlight = Atomic<Int>(0)
  private let retriesInFlight = Atomic<Int>(0)
  private let loops: [any EventLoop]
  private let upstream: MeshConfig.Upstream
  private let security: UpstreamSecurity?
  private let logger: Logger

  init(
    name: String,
    declared: Bool,
    definition: AgentDefinition?,
    policy: MeshConfig.Policy,
    loops: [any EventLoop],
    upstream: MeshConfig.Upstream,
    metrics: MeshMetrics,
    accessLog: Bool,
    security: UpstreamSecurity?,
    logger: Logger
  ) {
    self.security = security
    self.name = name
    self.declared = declared
    self.policy = policy
    self.metrics = metrics
    self.accessLog = accessLog
    self.ejectionsCounter = metrics.counter("ejections_total", [("pool", name)])
    self.probesPassed = metrics.counter("health_probes_total", [("pool", name), ("result", "passed")])
    self.probesFailed = metrics.counter("health_probes_total", [("pool", name), ("result", "failed")])
    self.state = Mutex(State(definition: definition))
    self.loops = loops
    self.upstream = upstream
    self.logger = logger.with("mesh.pool", name)
  }

  /// The agent definition the pool registers with the core, once known.
  public var definition: AgentDefinition? { state.withLock { $0.definition } }

  /// Every endpoint of the pool, in or out of rotation.
  public var endpoints: [Endpoint] { state.withLock { $0.endpoints } }

  /// Every endpoint with its health.
  public var endpointStates: [EndpointState] {
    let now = ContinuousClock.now
    return state.withLock { state in
      state.endpoints.map { endpoint in
        let health = state.health[ObjectIdentifier(endpoint)]!
        let liveness = endpoint.membershipID.flatMap { state.members[$0]?.liveness.signal }
        return EndpointState(endpoint: endpoint, health: health, state: health.stateName(at: now), liveness: liveness)
      }
    }
  }

  // MARK: The data path

  /// The endpoint in rotation that the pool's balancer picks, not one in `excluded`; it counts
  /// as outstanding on that endpoint until ``release(_:)``.
  public func pick(excluding excluded: [Endpoint] = []) -> Pick {
    state.withLock { state in
      var candidates = state.rotation
      if candidates.isEmpty && policy.health.panicMode { candidates = state.endpoints }
      let isExcluded = { (index: Int) in excluded.contains { $0 === candidates[index] } }
      let picked: Int?
      switch policy.balancer.policy {
      case .leastRequest:
        picked = state.leastRequest.pick(
          count: candidates.count, load: { candidates[$0].outstanding.load(ordering: .relaxed) }, isExcluded: isExcluded)
      case .roundRobin:
        picked = state.roundRobin.pick(count: candidates.count, isExcluded: isExcluded)
      }
      guard let picked else { return .none(Self.noEndpointReason(pool: name, state: state, tried: excluded.count)) }
      candidates[picked].outstanding.add(1, ordering: .relaxed)
      return .endpoint(candidates[picked])
    }
  }

  /// Ends an attempt that ``pick(excluding:)`` counted on `endpoint`.
  public func release(_ endpoint: Endpoint) {
    endpoint.outstanding.subtract(1, ordering: .relaxed)
  }

  /// Records how a call on `endpoint` went (`failed`: it could not reach the handler, was
  /// reset, answered `UNAVAILABLE` or timed out), ejecting the endpoint after too many failures.
  public func record(_ endpoint: Endpoint, failed: Bool) {
    // A success after a success changes nothing: no lock, no clock (most calls).
    guard failed || endpoint.hasRecentFailures.load(ordering: .relaxed) else { return }
    endpoint.hasRecentFailures.store(failed, ordering: .relaxed)
    let now = ContinuousClock.now
    let ejected = state.withLock { state -> EndpointHealth? in
      let id = ObjectIdentifier(endpoint)
      guard var health = state.health[id] else { return nil }
      let ejectedCount = failed ? state.health.values.reduce(0) { $0 + ($1.isEjected(at: now) ? 1 : 0) } : 0
      let limit = max(1, state.endpoints.count * policy.outlierDetection.maxEjectionPercent / 100)
      let ejected = health.call(failed: failed, now: now, mayEject: ejectedCount < limit)
      state.health[id] = health
      if ejected { Self.updateRotation(&state, now: now) }
      return ejected ? health : nil
    }
    if let ejected {
      ejectionsCounter.increment()
      logger.warning(
        "replica ejected: calls keep failing",
        metadata: [
          "mesh.replica": "\(endpoint)", "mesh.ejections": "\(ejected.ejections)",
          "mesh.ejected_for": "\(ejected.ejectedUntil.map { $0 - now } ?? .zero)",
        ])
    }
  }

  /// Server-side metrics of calls to `path` on this pool's listener, made once per path.
  func serverMetrics(path: String) -> GRPCCallMetrics {
    serverMetricsByPath.metrics(path: path) { metrics.server(pool: name, path: path) }
  }

  /// Counts a retry, by reason (`connect_failed`, `refused_stream`, `goaway`, `unavailable`, `replay`).
  func countRetry(reason: String) {
    metrics.counter("retries_total", [("pool", name), ("reason", reason)]).increment()
  }

  /// Calls in flight now.
  public var callsInFlightCount: Int { callsInFlight.load(ordering: .relaxed) }

  /// Whether a core has accepted this pool's agent (and not forgotten it since).
  public var isRegisteredWithCore: Bool { registeredCores.load(ordering: .relaxed) > 0 }

  /// A core accepted the agent (`true`) or forgot or refused it after accepting it (`false`).
  func coreRegistrationChanged(registered: Bool) {
    if registered {
      registeredCores.add(1, ordering: .relaxed)
    } else {
      registeredCores.subtract(1, ordering: .relaxed)
    }
  }

  /// Why the pool cannot serve the core now, or `nil` when it can: it needs its core
  /// registration (when it has an agent definition) and one endpoint in rotation.
  public var notReadyReason: String? {
    let (hasDefinition, noEndpoint) = state.withLock { state in
      (state.definition != nil, state.rotation.isEmpty ? Self.noEndpointReason(pool: name, state: state, tried: 0) : nil)
    }
    if hasDefinition && !isRegisteredWithCore { return "pool \"\(name)\" is not registered with any core" }
    return noEndpoint
  }

  /// Counts a call in flight for the retry budget; pair with ``endCall()``.
  func beginCall() { callsInFlight.add(1, ordering: .relaxed) }

  /// Ends a call counted by ``beginCall()``.
  func endCall() { callsInFlight.subtract(1, ordering: .relaxed) }

  /// Takes a retry from the budget (`retry.budget_percent` of calls in flight, at least
  /// `retry.min_concurrent_retries`); `false` when it is spent. Pair with ``endRetry()``.
  func beginRetry() -> Bool {
    let allowed = max(
      policy.retry.minConcurrentRetries, callsInFlight.load(ordering: .relaxed) * policy.retry.budgetPercent / 100)
    let (taken, _) = retriesInFlight.add(1, ordering: .relaxed)
    if taken > allowed {
      retriesInFlight.subtract(1, ordering: .relaxed)
      return false
    }
    return true
  }

  /// Returns a retry taken by ``beginRetry()``.
  func endRetry() { retriesInFlight.subtract(1, ordering: .relaxed) }

  // MARK: Health

  /// Records an active probe of `endpoint`.
  func recordProbe(_ endpoint: Endpoint, passed: Bool, message: String) {
    (passed ? probesPassed : probesFailed).increment()
    let now = ContinuousClock.now
    let change = state.withLock { state -> EndpointHealth? in
      let id = ObjectIdentifier(endpoint)
      guard var health = state.health[id] else { return nil }
      if passed, let member = endpoint.membershipID { state.members[member]?.liveness.probePassed(at: now) }
      let changed = health.probe(passed: passed, message: message, now: now)
      state.health[id] = health
      if changed { Self.updateRotation(&state, now: now) }
      return changed ? health : nil
    }
    if let change {
      let inRotation = change.inRotation(at: now)
      logger.log(
        level: inRotation ? .notice : .warning,
        inRotation ? "replica in rotation" : "replica out of rotation: health check failing",
        metadata: ["mesh.replica": "\(endpoint)", "mesh.state": "\(change.stateName(at: now))", "mesh.probe": "\(message)"])
    }
  }

  /// Ends ejections whose time is up.
  func expireEjections() {
    let now = ContinuousClock.now
    let returned = state.withLock { state -> [Endpoint] in
      let expired = state.endpoints.filter { state.health[ObjectIdentifier($0)]!.expireEjection(now: now) }
      if !expired.isEmpty { Self.updateRotation(&state, now: now) }
      return expired
    }
    for endpoint in returned {
      logger.notice("replica ejection over", metadata: ["mesh.replica": "\(endpoint)"])
    }
  }

  // MARK: Membership

  /// Adds a replica at a fixed address.
  func addConfigured(_ address: HostPort) {
    add(makeEndpoint(address, origin: .configured))
  }

  /// Makes the endpoints from DNS exactly `addresses`: new ones join, missing ones drain.
  func setDiscovered(_ addresses: [HostPort]) -> (added: [Endpoint], removed: [Endpoint]) {
    let wanted = Set(addresses)
    let (have, removed) = state.withLock { state -> (Set<HostPort>, [Endpoint]) in
      let discovered = state.endpoints.filter { $0.origin == .discovered }
      let removed = discovered.filter { !wanted.contains($0.address) }
      Self.remove(removed, from: &state)
      return (Set(discovered.map(\.address)), removed)
    }
    let added = addresses.filter { !have.contains($0) }.map { makeEndpoint($0, origin: .discovered) }
    added.forEach(add)
    removed.forEach { $0.drain() }
    return (added, removed)
  }

  /// Adds a registered replica, unless its config conflicts with the pool's.
  func join(membershipID: String, endpoint: Endpoint, definition: AgentDefinition) -> JoinResult {
    let now = ContinuousClock.now
    return state.withLock { state in
      if let existing = state.definition, let reason = existing.conflict(with: definition) {
        return .refused(reason)
      }
      if state.definition == nil { state.definition = definition }
      state.members[membershipID] = Member(endpoint: endpoint, liveness: MemberLiveness(joinedAt: now))
      Self.insert(endpoint, policy: policy, into: &state, now: now)
      return .joined
    }
  }

  /// Takes back a member kept across a mesh restart, with its membership id; like a new
  /// endpoint, it takes calls after its first passing probe.
  func restore(membershipID: String, address: HostPort) -> Endpoint {
    let endpoint = makeRegisteredEndpoint(address, membershipID: membershipID)
    let now = ContinuousClock.now
    state.withLock { state in
      state.members[membershipID] = Member(endpoint: endpoint, liveness: MemberLiveness(joinedAt: now))
      Self.insert(endpoint, policy: policy, into: &state, now: now)
    }
    return endpoint
  }

  /// The registered members, for the state file.
  var storedMembers: [RegistrySnapshot.Member] {
    state.withLock { state in
      state.members.map { RegistrySnapshot.Member(id: $0.key, address: $0.value.endpoint.address.description) }
        .sorted { $0.id < $1.id }
    }
  }

  /// Takes `definition` when the pool has none (a declared pool without a config, restored).
  func adopt(_ definition: AgentDefinition) {
    state.withLock { state in
      if state.definition == nil { state.definition = definition }
    }
  }

  /// Makes an endpoint for a registering replica (to probe before it joins).
  func makeRegisteredEndpoint(_ address: HostPort, membershipID: String) -> Endpoint {
    makeEndpoint(address, origin: .registered(membershipID: membershipID))
  }

  /// Marks a member alive; `false` when the id is not a member.
  func heartbeat(membershipID: String) -> Bool {
    state.withLock { state in
      guard state.members[membershipID] != nil else { return false }
      state.members[membershipID]!.liveness.heartbeat(at: ContinuousClock.now)
      return true
    }
  }

  /// Whether `membershipID` is a member of this pool.
  func hasMember(_ membershipID: String) -> Bool { state.withLock { $0.members[membershipID] != nil } }

  /// Removes a member; its connections drain. `false` when the id is not a member.
  @discardableResult
  func leave(membershipID: String) -> Bool {
    let removed = state.withLock { state -> Endpoint? in
      guard let member = state.members.removeValue(forKey: membershipID) else { return nil }
      Self.remove([member.endpoint], from: &state)
      return member.endpoint
    }
    removed?.drain()
    return removed != nil
  }

  /// Removes members with neither a heartbeat nor a passing probe within `timeout`.
  func evict(silentFor timeout: Duration) -> Eviction {
    let now = ContinuousClock.now
    let found = state.withLock { state -> Eviction in
      var found = Eviction()
      for id in Array(state.members.keys) {
        switch state.members[id]!.liveness.check(now: now, timeout: timeout) {
        case .alive: break
        case .keptByProbes: found.keptByProbes.append(state.members[id]!.endpoint)
        case .evict: found.evicted.append(state.members.removeValue(forKey: id)!.endpoint)
        }
      }
      Self.remove(found.evicted, from: &state)
      return found
    }
    found.evicted.forEach { $0.drain() }
    return found
  }

  /// Forgets the definition of a pool made by registration when the core refused it and no
  /// replica is left, so a corrected replica can define it again.
  func forgetDefinitionIfUnused(_ definition: AgentDefinition) {
    state.withLock { state in
      if !declared, state.members.isEmpty, state.definition == definition { state.definition = nil }
    }
  }

  // MARK: Internals

  private func add(_ endpoint: Endpoint) {
    let now = ContinuousClock.now
    state.withLock { Self.insert(endpoint, policy: policy, into: &$0, now: now) }
  }

  private func makeEndpoint(_ address: HostPort, origin: Endpoint.Origin) -> Endpoint {
    Endpoint(address: address, origin: origin, loops: loops, config: upstream, security: security, logger: logger)
  }

  private static func insert(_ endpoint: Endpoint, policy: MeshConfig.Policy, into state: inout State, now: ContinuousClock.Instant) {
    let id = ObjectIdentifier(endpoint)
    if state.health[id] == nil { state.health[id] = EndpointHealth(policy: policy) }
    state.endpoints.append(endpoint)
    updateRotation(&state, now: now)
  }

  private static func remove(_ endpoints: [Endpoint], from state: inout State) {
    guard !endpoints.isEmpty else { return }
    state.endpoints.removeAll { endpoint in endpoints.contains { $0 === endpoint } }
    for endpoint in endpoints { state.health[ObjectIdentifier(endpoint)] = nil }
    updateRotation(&state, now: .now)
  }

  private static func updateRotation(_ state: inout State, now: ContinuousClock.Instant) {
    let health = state.health
    state.rotation = state.endpoints.filter { health[ObjectIdentifier($0)]!.inRotation(at: now) }
  }

  private static func noEndpointReason(pool: String, state: State, tried: Int) -> String {
    if state.endpoints.isEmpty { return "no replica in pool \"\(pool)\"" }
    if tried > 0 && !state.rotation.isEmpty {
      return "no other healthy replica of pool \"\(pool)\" to try"
    }
    let now = ContinuousClock.now
    var counts: [String: Int] = [:]
    for endpoint in state.endpoints {
      counts[state.health[ObjectIdentifier(endpoint)]!.stateName(at: now), default: 0] += 1
    }
    let summary = counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    return "no healthy replica in pool \"\(pool)\" (\(state.endpoints.count) replicas: \(summary))"
  }
}
