import BinduDataPath
import BinduMeshConfig

/// The pools' side of the registry shared in PostgreSQL (``SharedRegistry``).
extension PoolDirectory {
  /// What a merge changed.
  struct SharedMerge: Sendable {
    /// The plan carried out.
    var plan: SharedRegistryMerge.Plan
    /// Pools made from the shared registry, to register with this mesh's cores.
    var toRegister: [(entry: Entry, definition: AgentDefinition)] = []
    /// Writes for the members here that the database never had.
    var toShare: [SharedRegistryWrite] = []
  }

  /// Brings the pools in line with `rows` (``SharedRegistryMerge``): makes the pools this mesh
  /// lacks, adds and removes members, and passes on every member's newest sighting.
  func mergeShared(
    _ rows: SharedRegistryRows, pendingAdds: Set<String>, pendingRemovals: Set<String>, known: Set<String>
  ) async -> SharedMerge {
    var members: [String: SharedRegistryMerge.Member] = [:]
    for entry in entries.values {
      for stored in entry.pool.registeredMembers {
        members[stored.id] = .init(agent: entry.pool.name, address: stored.address.description)
      }
    }
    let rules = SharedRegistryMerge(
      pools: entries.mapValues { $0.pool.definition?.configJSON }, members: members, pendingAdds: pendingAdds,
      pendingRemovals: pendingRemovals, known: known)
    let plan = rules.plan(rows)
    var merge = SharedMerge(plan: plan)
    for pool in plan.newPools {
      do {
        let definition = try AgentDefinition(configJSON: pool.configJSON, skillsJSON: pool.skills)
        let entry = try await self.pool(forAgent: pool.agent)
        entry.pool.adopt(definition)
        merge.toRegister.append((entry, definition))
        logger.notice("pool learned from the shared registry", metadata: ["mesh.pool": "\(pool.agent)"])
      } catch {
        logger.error(
          "a pool of the shared registry cannot be made here", metadata: ["mesh.pool": "\(pool.agent)", "error": "\(error)"])
      }
    }
    for member in plan.added {
      guard let entry = entries[member.agent], let address = HostPort(parsing: member.address) else { continue }
      let endpoint = entry.pool.restore(membershipID: member.id, address: address)
      entry.pool.applySightings([member.id: member.age])
      logger.notice(
        "replica learned from the shared registry",
        metadata: [
          "mesh.pool": "\(member.agent)", "mesh.replica": "\(endpoint)", "mesh.member": "\(member.id)",
          "mesh.registered_at": "\(member.registeredAt)",
        ])
    }
    for id in plan.removed {
      guard let pool = entries.values.first(where: { $0.pool.hasMember(id) })?.pool else { continue }
      pool.leave(membershipID: id)
      logger.notice(
        "replica left at another mesh of the shared registry", metadata: ["mesh.pool": "\(pool.name)", "mesh.member": "\(id)"])
    }
    for entry in entries.values { entry.pool.applySightings(plan.sightings) }
    for id in plan.toShare {
      guard let agent = members[id]?.agent, let pool = entries[agent]?.pool, let definition = pool.definition else { continue }
      merge.toShare += [
        .pool(agent: agent, configJSON: definition.configJSON, skills: definition.skillsJSON),
        .member(id: id, agent: agent, address: members[id]!.address),
      ]
    }
    return merge
  }

  /// The members that this mesh itself saw alive (a heartbeat or a passing probe) since `instant`.
  func membersSeenHere(since instant: ContinuousClock.Instant) -> [String] {
    entries.values.flatMap { $0.pool.membersSeenHere(since: instant) }
  }
}
