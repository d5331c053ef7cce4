import Logging
import NIOCore
import Synchronization

/// The replicas of one agent, and the one place the data path picks from.
///
/// A pool is named by its agent. Endpoints join from the config (static addresses) or from
/// registrations (each with a membership id kept alive by heartbeats); ``pick(excluding:)`` is
/// the synchronous round-robin choice the listener makes for every call.
public final class ReplicaPool: Sendable {
  /// A registered replica's membership.
  struct Member: Sendable {
    var endpoint: Endpoint
    var lastHeartbeat: ContinuousClock.Instant
  }

  private struct State: Sendable {
    var endpoints: [Endpoint] = []
    var balancer = RoundRobin()
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

  /// The agent's name.
  public let name: String
  /// Whether the pool was declared in the config (it keeps its definition when empty).
  public let declared: Bool
  private let state: Mutex<State>
  private let loops: [any EventLoop]
  private let upstream: MeshConfig.Upstream
  private let logger: Logger

  init(
    name: String,
    declared: Bool,
    definition: AgentDefinition?,
    loops: [any EventLoop],
    upstream: MeshConfig.Upstream,
    logger: Logger
  ) {
    self.name = name
    self.declared = declared
    self.state = Mutex(State(definition: definition))
    self.loops = loops
    self.upstream = upstream
    self.logger = logger
  }

  /// The agent definition the pool registers with the core, once known.
  public var definition: AgentDefinition? { state.withLock { $0.definition } }

  /// The endpoints in rotation, in order.
  public var endpoints: [Endpoint] { state.withLock { $0.endpoints } }

  /// The next endpoint in round-robin order that is not in `excluded`.
  public func pick(excluding excluded: [Endpoint] = []) -> Endpoint? {
    state.withLock { state in
      let endpoints = state.endpoints
      return state.balancer.pick(count: endpoints.count) { index in
        excluded.contains { $0 === endpoints[index] }
      }.map { endpoints[$0] }
    }
  }

  /// Adds a replica at a fixed address.
  func addConfigured(_ address: HostPort) {
    let endpoint = makeEndpoint(address, origin: .configured)
    state.withLock { $0.endpoints.append(endpoint) }
  }

  /// Adds a registered replica, unless its config conflicts with the pool's.
  func join(membershipID: String, address: HostPort, definition: AgentDefinition) -> JoinResult {
    let endpoint = makeEndpoint(address, origin: .registered(membershipID: membershipID))
    return state.withLock { state in
      if let existing = state.definition, let reason = existing.conflict(with: definition) {
        return .refused(reason)
      }
      if state.definition == nil { state.definition = definition }
      state.members[membershipID] = Member(endpoint: endpoint, lastHeartbeat: .now)
      state.endpoints.append(endpoint)
      return .joined
    }
  }

  /// Marks a member alive; `false` when the id is not a member.
  func heartbeat(membershipID: String) -> Bool {
    state.withLock { state in
      guard state.members[membershipID] != nil else { return false }
      state.members[membershipID]!.lastHeartbeat = .now
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
      state.endpoints.removeAll { $0 === member.endpoint }
      return member.endpoint
    }
    removed?.drain()
    return removed != nil
  }

  /// Removes members whose last heartbeat is older than `timeout`; returns their endpoints.
  func evict(silentFor timeout: Duration) -> [Endpoint] {
    let now = ContinuousClock.now
    let evicted = state.withLock { state -> [Endpoint] in
      let stale = state.members.filter { now - $0.value.lastHeartbeat > timeout }
      for id in stale.keys { state.members.removeValue(forKey: id) }
      let endpoints = stale.values.map(\.endpoint)
      state.endpoints.removeAll { endpoint in endpoints.contains { $0 === endpoint } }
      return endpoints
    }
    evicted.forEach { $0.drain() }
    return evicted
  }

  /// Forgets the definition of a pool made by registration when the core refused it and no
  /// replica is left, so a corrected replica can define it again.
  func forgetDefinitionIfUnused(_ definition: AgentDefinition) {
    state.withLock { state in
      if !declared, state.members.isEmpty, state.definition == definition { state.definition = nil }
    }
  }

  private func makeEndpoint(_ address: HostPort, origin: Endpoint.Origin) -> Endpoint {
    Endpoint(address: address, origin: origin, loops: loops, config: upstream, logger: logger)
  }
}
