/// What the shared registry in PostgreSQL holds, as one mesh read it.
package struct SharedRegistryRows: Sendable, Hashable {
  /// A pool's agent definition, as the first mesh that took one of its replicas wrote it.
  package struct Pool: Sendable, Hashable {
    /// The agent's name.
    package var agent: String
    /// Its config JSON.
    package var configJSON: String
    /// Its skills, each as protobuf JSON.
    package var skills: [String]
  }

  /// A registered replica.
  package struct Member: Sendable, Hashable {
    /// Its membership id, the same at every mesh.
    package var id: String
    /// Its pool's agent.
    package var agent: String
    /// Where its `AgentHandler` is reached, `host:port`.
    package var address: String
    /// The mesh that took its registration.
    package var registeredAt: String
    /// How long ago a mesh last saw it alive (by the database's clock).
    package var age: Duration
  }

  /// Pools by agent.
  package var pools: [String: Pool]
  /// Members by id.
  package var members: [String: Member]

  /// Rows as read.
  package init(pools: [Pool], members: [Member]) {
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
package struct SharedRegistryMerge: Sendable, Hashable {
  /// What to change.
  package struct Plan: Sendable, Hashable {
    /// Pools to make (the agent has none here), with their definitions.
    package var newPools: [SharedRegistryRows.Pool] = []
    /// Members to add.
    package var added: [SharedRegistryRows.Member] = []
    /// Members to remove: unregistered or evicted at another mesh.
    package var removed: [String] = []
    /// Members here that the database has never had (taken while it was unreachable, or kept
    /// in the state file): write them.
    package var toShare: [String] = []
    /// How long ago each member still here was last seen by any mesh.
    package var sightings: [String: Duration] = [:]
    /// Pools whose definition here differs from the shared one: agent and reason (kept as
    /// they are; a replica registering with the other definition is refused here).
    package var conflicts: [String: String] = [:]

    /// Whether the plan changes the pools.
    package var changesMembership: Bool { !newPools.isEmpty || !added.isEmpty || !removed.isEmpty }
  }

  /// What this mesh has: its pools' definitions (config JSON by agent; `nil` for a pool
  /// without one yet) and registered members (address by id, by agent).
  package var pools: [String: String?]
  /// Registered members here, by id: agent and address.
  package var members: [String: Member]
  /// A registered member here.
  package struct Member: Sendable, Hashable {
    /// Its pool's agent.
    package var agent: String
    /// Its address, `host:port`.
    package var address: String

    /// A member of `agent`'s pool at `address`.
    package init(agent: String, address: String) {
      self.agent = agent
      self.address = address
    }
  }

  /// Members this mesh has written but not yet committed.
  package var pendingAdds: Set<String>
  /// Members this mesh has removed but not yet deleted in the database.
  package var pendingRemovals: Set<String>
  /// Members this mesh knows the database has had (read there, or written by it).
  package var known: Set<String>

  /// The rules for a mesh with these pools and members.
  package init(
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
  package func plan(_ rows: SharedRegistryRows) -> Plan {
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
