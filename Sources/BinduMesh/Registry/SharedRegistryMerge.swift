/// What the shared registry in PostgreSQL holds, as one mesh read it.
public struct SharedRegistryRows: Sendable, Hashable {
  /// A pool's agent definition, as the first mesh that took one of its replicas wrote it.
  public struct Pool: Sendable, Hashable {
    /// The agent's name.
    public var agent: String
    /// Its config JSON.
    public var configJSON: String
    /// Its skills, each as protobuf JSON.
    public var skills: [String]
  }

  /// A registered replica.
  public struct Member: Sendable, Hashable {
    /// Its membership id, the same at every mesh.
    public var id: String
    /// Its pool's agent.
    public var agent: String
    /// Where its `AgentHandler` is reached, `host:port`.
    public var address: String
    /// The mesh that took its registration.
    public var registeredAt: String
    /// How long ago a mesh last saw it alive (by the database's clock).
    public var age: Duration
  }

  /// Pools by agent.
  public var pools: [String: Pool]
  /// Members by id.
  public var members: [String: Member]

  /// Rows as read.
  public init(pools: [Pool], members: [Member]) {
    self.pools = Dictionary(pools.map { ($0.agent, $0) }, uniquingKeysWith: { first, _ in first })
    self.members = Dictionary(members.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
  }
}

/// How one mesh brings its pools in line with the shared registry: the rules, as a value.
///
/// The database is the registry of every mesh; what this mesh has not written yet (its pending
/// writes) is newer than what it read. So a member is added when the rows have it and this mesh
/// neither has it nor is removing it; removed when the rows lack it, the database had it once
/// (another mesh removed it) and this mesh is not about to write it; written when the database
/// never had it (taken during an outage: nothing is lost); and every member's newest sighting
/// is passed on, so that a replica is evicted only when no mesh has seen it.
public struct SharedRegistryMerge: Sendable, Hashable {
  /// What to change.
  public struct Plan: Sendable, Hashable {
    /// Pools to make (the agent has none here), with their definitions.
    public var newPools: [SharedRegistryRows.Pool] = []
    /// Members to add.
    public var added: [SharedRegistryRows.Member] = []
    /// Members to remove: unregistered or evicted at another mesh.
    public var removed: [String] = []
    /// Members here that the database has never had (taken while it was unreachable, or kept
    /// in the state file): write them.
    public var toShare: [String] = []
    /// How long ago each member still here was last seen by any mesh.
    public var sightings: [String: Duration] = [:]
    /// Pools whose definition here differs from the shared one: agent and reason (kept as
    /// they are; a replica registering with the other definition is refused here).
    public var conflicts: [String: String] = [:]

    /// Whether the plan changes the pools.
    public var changesMembership: Bool { !newPools.isEmpty || !added.isEmpty || !removed.isEmpty }
  }

  /// What this mesh has: its pools' definitions (config JSON by agent; `nil` for a pool
  /// without one yet) and registered members (address by id, by agent).
  public var pools: [String: String?]
  /// Registered members here, by id: agent and address.
  public var members: [String: Member]
  /// A registered member here.
  public struct Member: Sendable, Hashable {
    /// Its pool's agent.
    public var agent: String
    /// Its address, `host:port`.
    public var address: String

    /// A member of `agent`'s pool at `address`.
    public init(agent: String, address: String) {
      self.agent = agent
      self.address = address
    }
  }

  /// Members this mesh has written but not yet committed.
  public var pendingAdds: Set<String>
  /// Members this mesh has removed but not yet deleted in the database.
  public var pendingRemovals: Set<String>
  /// Members this mesh knows the database has had (read there, or written by it).
  public var known: Set<String>

  /// The rules for a mesh with these pools and members.
  public init(
    pools: [String: String?], members: [String: Member], pendingAdds: Set<String> = [],
    pendingRemovals: Set<String> = [], known: Set<String> = []
  ) {
    self.known = known
    self.pools = pools
    self.members = members
    self.pendingAdds = pendingAdds
    self.pendingRemovals = pendingRemovals
  }

  /// The changes that bring this mesh in line with `rows`.
  public func plan(_ rows: SharedRegistryRows) -> Plan {
    var plan = Plan()
    for (agent, pool) in rows.pools.sorted(by: { $0.key < $1.key }) {
      switch pools[agent] {
      case nil:
        plan.newPools.append(pool)
      case .some(.some(let configJSON)) where configJSON != pool.configJSON:
        plan.conflicts[agent] = "another mesh of the shared registry holds a different config for agent \"\(agent)\""
      default:
        break
      }
    }
    for (id, member) in rows.members.sorted(by: { $0.key < $1.key }) {
      // A member of a pool the rows do not define cannot be served: wait for its pool's row.
      guard rows.pools[member.agent] != nil || pools[member.agent] != nil else { continue }
      if members[id] != nil {
        plan.sightings[id] = member.age
      } else if !pendingRemovals.contains(id) {
        plan.added.append(member)
      }
    }
    for id in members.keys.sorted() where rows.members[id] == nil && !pendingAdds.contains(id) {
      if known.contains(id) { plan.removed.append(id) } else { plan.toShare.append(id) }
    }
    return plan
  }
}
