/// A pool's rules in one value: its endpoints and their health, the rotation (who may take
/// calls), the ejection limit, panic mode, the balancer with its slots and queue, and the
/// registered members.
///
/// Mutated under ``ReplicaPool``'s lock with the clock passed in; each method returns what
/// changed (an endpoint that left or entered rotation, calls to resume), and the pool does the
/// logging, metrics and I/O outside the lock. Tested without sockets.
struct PoolState: Sendable {
  /// A registered replica's membership.
  struct Member: Sendable {
    var endpoint: Endpoint
    var liveness: MemberLiveness
  }

  typealias Balancer = PoolBalancer<Endpoint, ReplicaPool.QueuedCall>

  private(set) var policy: MeshConfig.Policy
  /// Every endpoint, in the order they joined.
  private(set) var endpoints: [Endpoint] = []
  private(set) var health: [ObjectIdentifier: EndpointHealth] = [:]
  /// The endpoints the balancer may pick: in rotation, in `endpoints` order.
  private(set) var rotation: [Endpoint] = []
  /// Endpoints drained by hand (the admin API): out of rotation whatever their health.
  private var drained: Set<ObjectIdentifier> = []
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
    for id in health.keys { health[id]!.apply(policy) }
    updateRotation(now: now)
  }

  // MARK: Picking

  /// Who may take a call: the rotation, or with none in it and `health.panic_mode`, everyone
  /// not drained by hand.
  var candidates: [Endpoint] {
    rotation.isEmpty && policy.health.panicMode ? endpoints.filter { !drained.contains(ObjectIdentifier($0)) } : rotation
  }

  /// The balancer's decision for a call that may not use `excluded`.
  mutating func pick(
    excluding excluded: [Endpoint], waiter: () -> ReplicaPool.QueuedCall, now: @autoclosure () -> ContinuousClock.Instant
  ) -> Balancer.Decision {
    balancer.pick(
      candidates, excluding: excluded, waiter: waiter, now: now(), load: Self.load, cost: Self.cost, take: Self.take)
  }

  /// Queued calls given the slots free now (after a call ended or the rotation changed).
  mutating func dispatch(now: ContinuousClock.Instant) -> [Balancer.Dispatched] {
    guard balancer.queuedCount > 0 else { return [] }
    return balancer.dispatch(candidates, now: now, load: Self.load, cost: Self.cost, take: Self.take)
  }

  static func load(_ endpoint: Endpoint) -> Int { endpoint.outstanding.load(ordering: .relaxed) }
  static func take(_ endpoint: Endpoint) { endpoint.outstanding.add(1, ordering: .relaxed) }
  /// How long the endpoint's calls take (µs; 0 before its first answer).
  static func cost(_ endpoint: Endpoint) -> Int { endpoint.callTimeAverage.load(ordering: .relaxed) }

  // MARK: Health

  /// A probe of `endpoint`; its health when that moved it in or out of rotation.
  mutating func probe(
    _ endpoint: Endpoint, passed: Bool, message: String, now: ContinuousClock.Instant
  ) -> EndpointHealth? {
    let id = ObjectIdentifier(endpoint)
    guard var endpointHealth = health[id] else { return nil }
    if passed, let member = endpoint.membershipID { members[member]?.liveness.probePassed(at: now) }
    let changed = endpointHealth.probe(passed: passed, message: message, now: now)
    health[id] = endpointHealth
    guard changed else { return nil }
    updateRotation(now: now)
    return endpointHealth
  }

  /// A call's outcome on `endpoint`; its health when that ejected it. No more than
  /// `outlier_detection.max_ejection_percent` of the pool is ejected at once (one endpoint
  /// always may be).
  mutating func callOutcome(_ endpoint: Endpoint, failed: Bool, now: ContinuousClock.Instant) -> EndpointHealth? {
    let id = ObjectIdentifier(endpoint)
    guard var endpointHealth = health[id] else { return nil }
    let ejectedCount = failed ? health.values.reduce(0) { $0 + ($1.isEjected(at: now) ? 1 : 0) } : 0
    let limit = max(1, endpoints.count * policy.outlierDetection.maxEjectionPercent / 100)
    let ejected = endpointHealth.call(failed: failed, now: now, mayEject: ejectedCount < limit)
    health[id] = endpointHealth
    guard ejected else { return nil }
    updateRotation(now: now)
    return endpointHealth
  }

  /// Ends the ejections whose time is up; the endpoints back in rotation.
  mutating func expireEjections(now: ContinuousClock.Instant) -> [Endpoint] {
    let expired = endpoints.filter { health[ObjectIdentifier($0)]!.expireEjection(now: now) }
    if !expired.isEmpty { updateRotation(now: now) }
    return expired
  }

  // MARK: Membership

  /// Adds an endpoint (it enters rotation once its health says so).
  mutating func insert(_ endpoint: Endpoint, now: ContinuousClock.Instant) {
    let id = ObjectIdentifier(endpoint)
    if health[id] == nil { health[id] = EndpointHealth(policy: policy) }
    endpoints.append(endpoint)
    updateRotation(now: now)
  }

  /// Removes endpoints; calls waiting in the queue are never given them.
  mutating func remove(_ gone: [Endpoint], now: ContinuousClock.Instant) {
    guard !gone.isEmpty else { return }
    endpoints.removeAll { endpoint in gone.contains { $0 === endpoint } }
    for endpoint in gone {
      health[ObjectIdentifier(endpoint)] = nil
      drained.remove(ObjectIdentifier(endpoint))
    }
    updateRotation(now: now)
  }

  private mutating func updateRotation(now: ContinuousClock.Instant) {
    let health = self.health
    let drained = self.drained
    rotation = endpoints.filter {
      !drained.contains(ObjectIdentifier($0)) && health[ObjectIdentifier($0)]!.inRotation(at: now)
    }
  }

  // MARK: Draining by hand

  /// Drains (or undrains) the endpoints at `address`: a drained endpoint takes no new call and
  /// its calls in flight finish; its health checks go on, and undraining puts it back in
  /// rotation if they pass. The endpoints found (none: no endpoint there).
  mutating func setDrained(_ drain: Bool, at address: HostPort, now: ContinuousClock.Instant) -> [Endpoint] {
    let found = endpoints.filter { $0.address == address }
    for endpoint in found {
      if drain { drained.insert(ObjectIdentifier(endpoint)) } else { drained.remove(ObjectIdentifier(endpoint)) }
    }
    if !found.isEmpty { updateRotation(now: now) }
    return found
  }

  /// Whether `endpoint` was drained by hand.
  func isDrained(_ endpoint: Endpoint) -> Bool { drained.contains(ObjectIdentifier(endpoint)) }

  /// What eviction found: members dropped, and members alive by their probes alone.
  struct Eviction: Sendable {
    var evicted: [Endpoint] = []
    var keptByProbes: [Endpoint] = []
  }

  /// Adds a registered replica under its membership id.
  mutating func addMember(_ id: String, endpoint: Endpoint, now: ContinuousClock.Instant) {
    members[id] = Member(endpoint: endpoint, liveness: MemberLiveness(joinedAt: now))
    insert(endpoint, now: now)
  }

  /// Removes a member; its endpoint, or `nil` when the id is not a member.
  mutating func removeMember(_ id: String, now: ContinuousClock.Instant) -> Endpoint? {
    guard let member = members.removeValue(forKey: id) else { return nil }
    remove([member.endpoint], now: now)
    return member.endpoint
  }

  /// Removes the members at `address` other than `kept`: their ids and endpoints.
  mutating func removeMembers(at address: HostPort, except kept: String, now: ContinuousClock.Instant)
    -> [(id: String, endpoint: Endpoint)]
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
      counts[health[ObjectIdentifier(endpoint)]!.stateName(at: now), default: 0] += 1
    }
    let summary = counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    return "no healthy replica in pool \"\(pool)\" (\(endpoints.count) replicas: \(summary))"
  }
}
