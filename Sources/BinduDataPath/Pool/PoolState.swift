import BinduMeshConfig

/// What a pool's rules need of an endpoint: its identity (the object), its address and, for a
/// registered replica, its membership id. ``Endpoint`` in the mesh; a plain object in tests.
package protocol PoolEndpoint: AnyObject, Sendable {
  var address: HostPort { get }
  var membershipID: String? { get }
}

extension Endpoint: PoolEndpoint {}

/// A pool's rules in one value: its endpoints and their health, the rotation (who may take
/// calls), the ejection limit, panic mode, the balancer with its slots and queue, and the
/// registered members.
///
/// Mutated under ``ReplicaPool``'s lock with the clock passed in; each method returns what
/// changed (an endpoint that left or entered rotation, calls to resume), and the pool does the
/// logging, metrics and I/O outside the lock. Tested without sockets.
package struct PoolState<E: PoolEndpoint, Waiter: Sendable>: Sendable {
  /// A registered replica's membership.
  struct Member: Sendable {
    var endpoint: E
    package var liveness: MemberLiveness
  }

  typealias Entry = EndpointEntry

  /// How an attempt on an endpoint ended.
  struct AttemptEnd: Sendable {
    /// How long the replica had it (from its stream's opening: connecting does not count).
    var took: Duration
    /// Whether it was answered OK.
    var ok: Bool
    /// Passive health: whether it counts as the endpoint's failure (it could not reach the
    /// handler, was reset, answered `UNAVAILABLE` or timed out); `nil`: it does not count either
    /// way (the caller left, the mesh ended it).
    var failed: Bool?
  }

  typealias Balancer = PoolBalancer<E, Waiter>

  private(set) var policy: MeshConfig.Policy
  /// Every endpoint, in the order they joined.
  private(set) var endpoints: [E] = []
  /// Every endpoint's standing, by its identity.
  private(set) var entries = EndpointEntries()
  /// The endpoints the balancer may pick: in rotation, in `endpoints` order.
  private(set) var rotation: [E] = []
  var balancer: Balancer
  var members: [String: Member] = [:]
  var definition: AgentDefinition?

  init(policy: MeshConfig.Policy, definition: AgentDefinition?) {
    self.policy = policy
    self.balancer = Balancer(config: policy.balancer)
    self.definition = definition
  }

  /// Takes a reloaded policy: the balancer's settings and every endpoint's thresholds change
  /// for what comes next; health, ejections and queued calls stay.
  mutating func apply(_ policy: MeshConfig.Policy, now: ContinuousClock.Instant) {
    self.policy = policy
    balancer.apply(policy.balancer)
    for slot in entries.values.indices { entries.values[slot].health.apply(policy) }
    updateRotation(now: now)
  }

  /// `endpoint`'s standing, if it is in the pool.
  func entry(_ endpoint: E) -> Entry? { entries[ObjectIdentifier(endpoint)] }

  // MARK: Picking

  /// Who may take a call: the rotation, or with none in it and `health.panic_mode`, everyone
  /// not drained by hand.
  var candidates: [E] {
    rotation.isEmpty && policy.health.panicMode ? endpoints.filter { !isDrained($0) } : rotation
  }

  /// The balancer's decision for a call that may not use `excluded`; the endpoint picked counts
  /// the call as outstanding.
  mutating func pick(
    excluding excluded: [E], waiter: () -> Waiter, now: @autoclosure () -> ContinuousClock.Instant
  ) -> Balancer.Decision {
    let candidates = self.candidates
    return Self.pick(&balancer, &entries, candidates, excluded, waiter, now())
  }

  /// Queued calls given the slots free now (after a call ended or the rotation changed).
  mutating func dispatch(now: ContinuousClock.Instant) -> [Balancer.Dispatched] {
    guard balancer.queuedCount > 0 else { return [] }
    let candidates = self.candidates
    return Self.dispatch(&balancer, &entries, candidates, now)
  }

  // The balancer reads and takes loads from the entries, which it holds apart from: two inout
  // values, not the whole state.
  private static func pick(
    _ balancer: inout Balancer, _ entries: inout EndpointEntries, _ candidates: [E], _ excluded: [E],
    _ waiter: () -> Waiter, _ now: @autoclosure () -> ContinuousClock.Instant
  ) -> Balancer.Decision {
    balancer.pick(
      candidates, excluding: excluded, waiter: waiter, now: now(),
      load: { entries.outstanding(ObjectIdentifier($0)) }, cost: { entries.callTime(ObjectIdentifier($0)) },
      take: { entries.take(ObjectIdentifier($0)) })
  }

  private static func dispatch(
    _ balancer: inout Balancer, _ entries: inout EndpointEntries, _ candidates: [E],
    _ now: ContinuousClock.Instant
  ) -> [Balancer.Dispatched] {
    balancer.dispatch(
      candidates, now: now,
      load: { entries.outstanding(ObjectIdentifier($0)) }, cost: { entries.callTime(ObjectIdentifier($0)) },
      take: { entries.take(ObjectIdentifier($0)) })
  }

  /// Gives back the call a pick counted on `endpoint`; with `attempt`, adds it to the
  /// endpoint's figures and, when it is judged, to its health. Returns the endpoint's health
  /// when that ejected it. An endpoint no longer in the pool has nothing to give back.
  mutating func release(_ endpoint: E, attempt: AttemptEnd?, now: ContinuousClock.Instant) -> EndpointHealth? {
    guard let slot = entries.slot(of: ObjectIdentifier(endpoint)) else { return nil }
    entries.values[slot].outstanding = max(0, entries.values[slot].outstanding - 1)
    guard let attempt else { return nil }
    let micros = max(1, Int(attempt.took.nanoseconds / 1000))
    entries.values[slot].recentCalls.add(second: CallWindow.second(of: now), micros: micros, ok: attempt.ok)
    if attempt.ok {
      let average = entries.values[slot].callTimeAverage
      entries.values[slot].callTimeAverage = average == 0 ? micros : average + (micros - average) / 8
    }
    guard let failed = attempt.failed else { return nil }
    return callOutcome(endpoint, failed: failed, now: now)
  }

  // MARK: Health

  /// A probe of `endpoint`; its health when that moved it in or out of rotation.
  mutating func probe(
    _ endpoint: E, passed: Bool, message: String, now: ContinuousClock.Instant
  ) -> EndpointHealth? {
    guard let slot = entries.slot(of: ObjectIdentifier(endpoint)) else { return nil }
    if passed, let member = endpoint.membershipID { members[member]?.liveness.probePassed(at: now) }
    let changed = entries.values[slot].health.probe(passed: passed, message: message, now: now)
    guard changed else { return nil }
    updateRotation(now: now)
    return entries.values[slot].health
  }

  /// A call's outcome on `endpoint`; its health when that ejected it. No more than
  /// `outlier_detection.max_ejection_percent` of the pool is ejected at once (one endpoint
  /// always may be).
  mutating func callOutcome(_ endpoint: E, failed: Bool, now: ContinuousClock.Instant) -> EndpointHealth? {
    guard let slot = entries.slot(of: ObjectIdentifier(endpoint)) else { return nil }
    // A success after a success changes nothing (most calls).
    guard failed || entries.values[slot].health.hasRecentFailures else { return nil }
    let ejectedCount = failed ? entries.values.reduce(0) { $0 + ($1.health.isEjected(at: now) ? 1 : 0) } : 0
    let limit = max(1, endpoints.count * policy.outlierDetection.maxEjectionPercent / 100)
    let ejected = entries.values[slot].health.call(failed: failed, now: now, mayEject: ejectedCount < limit)
    guard ejected else { return nil }
    updateRotation(now: now)
    return entries.values[slot].health
  }

  /// Ends the ejections whose time is up; the endpoints back in rotation.
  mutating func expireEjections(now: ContinuousClock.Instant) -> [E] {
    let expired = endpoints.filter { entries.values[entries.slot(of: ObjectIdentifier($0))!].health.expireEjection(now: now) }
    if !expired.isEmpty { updateRotation(now: now) }
    return expired
  }

  // MARK: Membership

  /// Adds an endpoint (it enters rotation once its health says so).
  mutating func insert(_ endpoint: E, now: ContinuousClock.Instant) {
    let id = ObjectIdentifier(endpoint)
    entries.insert(id, Entry(health: EndpointHealth(policy: policy)))
    endpoints.append(endpoint)
    updateRotation(now: now)
  }

  /// Removes endpoints; calls waiting in the queue are never given them.
  mutating func remove(_ gone: [E], now: ContinuousClock.Instant) {
    guard !gone.isEmpty else { return }
    endpoints.removeAll { endpoint in gone.contains { $0 === endpoint } }
    for endpoint in gone { entries.remove(ObjectIdentifier(endpoint)) }
    updateRotation(now: now)
  }

  private mutating func updateRotation(now: ContinuousClock.Instant) {
    let entries = self.entries
    rotation = endpoints.filter {
      let entry = entries[ObjectIdentifier($0)]!
      return !entry.drained && entry.health.inRotation(at: now)
    }
  }

  // MARK: Draining by hand

  /// Drains (or undrains) the endpoints at `address`: a drained endpoint takes no new call and
  /// its calls in flight finish; its health checks go on, and undraining puts it back in
  /// rotation if they pass. The endpoints found (none: no endpoint there).
  mutating func setDrained(_ drain: Bool, at address: HostPort, now: ContinuousClock.Instant) -> [E] {
    let found = endpoints.filter { $0.address == address }
    for endpoint in found {
      if let slot = entries.slot(of: ObjectIdentifier(endpoint)) { entries.values[slot].drained = drain }
    }
    if !found.isEmpty { updateRotation(now: now) }
    return found
  }

  /// Whether `endpoint` was drained by hand.
  func isDrained(_ endpoint: E) -> Bool { entries[ObjectIdentifier(endpoint)]?.drained ?? false }

  /// What eviction found: members dropped, and members alive by their probes alone.
  package struct Eviction: Sendable {
    package var evicted: [E] = []
    package var keptByProbes: [E] = []
  }

  /// Adds a registered replica under its membership id.
  mutating func addMember(_ id: String, endpoint: E, now: ContinuousClock.Instant) {
    members[id] = Member(endpoint: endpoint, liveness: MemberLiveness(joinedAt: now))
    insert(endpoint, now: now)
  }

  /// Removes a member; its endpoint, or `nil` when the id is not a member.
  mutating func removeMember(_ id: String, now: ContinuousClock.Instant) -> E? {
    guard let member = members.removeValue(forKey: id) else { return nil }
    remove([member.endpoint], now: now)
    return member.endpoint
  }

  /// Removes the members at `address` other than `kept`: their ids and endpoints.
  mutating func removeMembers(at address: HostPort, except kept: String, now: ContinuousClock.Instant)
    -> [(id: String, endpoint: E)]
  {
    // Only members that joined before `kept`: two registrations in flight at once from one
    // address must not remove each other.
    guard let keptJoined = members[kept]?.liveness.joined else { return [] }
    let ids = members.filter {
      $0.key != kept && $0.value.endpoint.address == address && $0.value.liveness.joined < keptJoined
    }.map(\.key)
    return ids.compactMap { id in removeMember(id, now: now).map { (id, $0) } }
  }

  /// Removes the members with neither a heartbeat nor a passing probe within `timeout`.
  mutating func evict(silentFor timeout: Duration, now: ContinuousClock.Instant) -> Eviction {
    var found = Eviction()
    for id in Array(members.keys) {
      switch members[id]!.liveness.check(now: now, timeout: timeout) {
      case .alive: break
      case .keptByProbes: found.keptByProbes.append(members[id]!.endpoint)
      case .evict: found.evicted.append(members.removeValue(forKey: id)!.endpoint)
      }
    }
    remove(found.evicted, now: now)
    return found
  }

  // MARK: Reports

  /// Why no endpoint may take a call of `pool` that tried `tried` endpoints already.
  func noEndpointReason(pool: String, tried: Int, now: ContinuousClock.Instant) -> String {
    if endpoints.isEmpty { return "no replica in pool \"\(pool)\"" }
    if tried > 0 && !rotation.isEmpty {
      return "no other healthy replica of pool \"\(pool)\" to try"
    }
    var counts: [String: Int] = [:]
    for endpoint in endpoints {
      counts[entries[ObjectIdentifier(endpoint)]!.health.stateName(at: now), default: 0] += 1
    }
    let summary = counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    return "no healthy replica in pool \"\(pool)\" (\(endpoints.count) replicas: \(summary))"
  }
}
