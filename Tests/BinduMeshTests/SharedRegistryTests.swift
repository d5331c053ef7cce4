import Foundation
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

/// The rules by which a mesh follows the registry shared in PostgreSQL, as plain values.
@Suite struct SharedRegistryMergeTests {
  let config = #"{"name":"echo-agent","author":"dev@example.com"}"#

  func row(_ id: String, agent: String = "echo-agent", address: String = "10.0.0.2:5001", at mesh: String = "b",
           age: Duration = .seconds(1)) -> SharedRegistryRows.Member {
    .init(id: id, agent: agent, address: address, registeredAt: mesh, age: age)
  }

  func rows(_ members: [SharedRegistryRows.Member], pools: [String] = ["echo-agent"]) -> SharedRegistryRows {
    SharedRegistryRows(pools: pools.map { .init(agent: $0, configJSON: config, skills: []) }, members: members)
  }

  @Test func aPoolAndItsMembersRegisteredAtAnotherMeshAreMadeHere() {
    let plan = SharedRegistryMerge(pools: [:], members: [:]).plan(rows([row("m1"), row("m2", address: "10.0.0.3:5001")]))
    #expect(plan.newPools.map(\.agent) == ["echo-agent"])
    #expect(plan.added.map(\.id) == ["m1", "m2"])
    #expect(plan.removed.isEmpty && plan.toShare.isEmpty)
    #expect(plan.changesMembership)
  }

  @Test func aMemberOfAPoolWithoutADefinitionAnywhereWaits() {
    let plan = SharedRegistryMerge(pools: [:], members: [:]).plan(rows([row("m1", agent: "other")], pools: []))
    #expect(plan.added.isEmpty && plan.newPools.isEmpty)
  }

  @Test func membersHereAreKeptAndTheirNewestSightingPassedOn() {
    let here = ["m1": SharedRegistryMerge.Member(agent: "echo-agent", address: "10.0.0.2:5001")]
    let plan = SharedRegistryMerge(pools: ["echo-agent": config], members: here, known: ["m1"])
      .plan(rows([row("m1", age: .seconds(40))]))
    #expect(!plan.changesMembership)
    #expect(plan.sightings == ["m1": .seconds(40)])
  }

  @Test func aMemberRemovedAtAnotherMeshLeavesHere() {
    let here = ["m1": SharedRegistryMerge.Member(agent: "echo-agent", address: "10.0.0.2:5001")]
    let plan = SharedRegistryMerge(pools: ["echo-agent": config], members: here, known: ["m1"]).plan(rows([]))
    #expect(plan.removed == ["m1"])
    #expect(plan.toShare.isEmpty)
  }

  @Test func aMemberTheDatabaseNeverHadIsWrittenNotRemoved() {
    // Taken here while the database was down, or kept in the state file: nothing is lost.
    let here = ["m1": SharedRegistryMerge.Member(agent: "echo-agent", address: "10.0.0.2:5001")]
    let plan = SharedRegistryMerge(pools: ["echo-agent": config], members: here).plan(rows([]))
    #expect(plan.removed.isEmpty)
    #expect(plan.toShare == ["m1"])
  }

  @Test func pendingWritesAreNewerThanWhatWasRead() {
    let here = ["m1": SharedRegistryMerge.Member(agent: "echo-agent", address: "10.0.0.2:5001")]
    // m1 joined here and is not written yet; m2 left here and is not deleted yet.
    let plan = SharedRegistryMerge(
      pools: ["echo-agent": config], members: here, pendingAdds: ["m1"], pendingRemovals: ["m2"], known: ["m1", "m2"]
    ).plan(rows([row("m2")]))
    #expect(plan.removed.isEmpty, "m1 is about to be written")
    #expect(plan.added.isEmpty, "m2 is about to be deleted")
    #expect(plan.toShare.isEmpty)
  }

  @Test func aDifferentDefinitionIsAConflictAndChangesNothing() {
    let plan = SharedRegistryMerge(pools: ["echo-agent": #"{"name":"echo-agent","author":"other"}"#], members: [:])
      .plan(rows([]))
    #expect(plan.conflicts.keys.sorted() == ["echo-agent"])
    #expect(plan.newPools.isEmpty)
  }

  @Test func aPoolWithoutADefinitionHereTakesTheSharedOneWithoutConflict() {
    let plan = SharedRegistryMerge(pools: ["echo-agent": nil], members: [:]).plan(rows([row("m1")]))
    #expect(plan.conflicts.isEmpty && plan.newPools.isEmpty)
    #expect(plan.added.map(\.id) == ["m1"])
  }
}

@Suite struct SharedLivenessTests {
  let start = ContinuousClock.now
  let timeout = Duration.seconds(90)

  @Test func aMemberSeenByAnotherMeshIsNotEvicted() {
    var member = MemberLiveness(joinedAt: start)
    // This mesh is cut off from it (no probe passes here); another mesh saw it 10 s ago.
    member.seenElsewhere(at: start + .seconds(150))
    #expect(member.check(now: start + .seconds(160), timeout: timeout) == .alive)
    #expect(member.signal == .elsewhere)
    #expect(member.seenHere == nil, "a sighting elsewhere is never passed on as this mesh's own")
    #expect(member.check(now: start + .seconds(241), timeout: timeout) == .evict)
  }

  @Test func anOlderSightingChangesNothing() {
    var member = MemberLiveness(joinedAt: start)
    member.seenElsewhere(at: start + .seconds(100))
    member.seenElsewhere(at: start + .seconds(20))
    #expect(member.check(now: start + .seconds(185), timeout: timeout) == .alive)
  }

  @Test func seenHereIsTheNewestOfHeartbeatAndProbe() {
    var member = MemberLiveness(joinedAt: start)
    member.heartbeat(at: start + .seconds(5))
    member.probePassed(at: start + .seconds(9))
    #expect(member.seenHere == start + .seconds(9))
  }
}

@Suite struct PostgresURLTests {
  @Test func aFullURL() throws {
    let url = try MeshConfig.PostgresURL(parsing: "postgres://mesh:p%40ss@db.internal:6432/registry?sslmode=require")
    #expect(url.host == "db.internal" && url.port == 6432 && url.user == "mesh" && url.password == "p@ss")
    #expect(url.database == "registry" && url.tlsMode == .require)
    #expect(url.description == "postgres://mesh@db.internal:6432/registry", "no password in logs")
  }

  @Test func defaults() throws {
    let url = try MeshConfig.PostgresURL(parsing: "postgresql://bindu@127.0.0.1")
    #expect(url.port == 5432 && url.database == "bindu" && url.password == nil && url.tlsMode == .prefer)
  }

  @Test func badURLsSayWhy() {
    #expect(throws: MeshConfig.PostgresURL.Invalid.self) { try MeshConfig.PostgresURL(parsing: "mysql://u@h/db") }
    #expect(throws: MeshConfig.PostgresURL.Invalid(reason: "the URL names no user")) {
      try MeshConfig.PostgresURL(parsing: "postgres://db.internal/x")
    }
    #expect(throws: MeshConfig.PostgresURL.Invalid.self) { try MeshConfig.PostgresURL(parsing: "postgres://u@h/db?sslmode=on") }
  }

  @Test func theConfigNamesFileLineAndKey() {
    let yaml = "registry:\n  postgres_url: postgres://nobody\n"
    #expect {
      try MeshConfig(yaml: yaml, source: "mesh.yaml")
    } throws: { error in
      "\(error)" == "mesh.yaml:2:17: registry.postgres_url: the URL names no user"
    }
    let meshID = "registry:\n  mesh_id: a\n"
    #expect {
      try MeshConfig(yaml: meshID, source: "mesh.yaml")
    } throws: { error in
      "\(error)".contains("registry.mesh_id: needs registry.postgres_url")
    }
    let loopback = "registry:\n  postgres_url: postgres://u@h/db\n  advertise_host: localhost\n"
    #expect {
      try MeshConfig(yaml: loopback, source: "mesh.yaml")
    } throws: { error in
      "\(error)".hasPrefix("mesh.yaml:3:19: registry.advertise_host: expected a host name or IP address the other meshes reach")
    }
    #expect {
      try MeshConfig(yaml: "registry:\n  advertise_host: host-a\n", source: "mesh.yaml")
    } throws: { error in
      "\(error)".contains("registry.advertise_host: needs registry.postgres_url")
    }
  }

  @Test func theSharedRegistryIsRead() throws {
    let yaml = "registry:\n  postgres_url: postgres://u:pw@127.0.0.1:5433/db\n  mesh_id: host-a\n  advertise_host: host-a.internal\n"
    let config = try MeshConfig(yaml: yaml, source: "mesh.yaml")
    #expect(config.registry.shared?.meshID == "host-a")
    #expect(config.registry.shared?.advertiseHost == "host-a.internal")
    #expect(MeshConfig.defaults.registry.shared == nil)
    #expect(config.registry.shared?.url.port == 5433)
    #expect(config.registry.shared?.origin.position == "2:17")
  }
}

@Suite struct SharedRegistryStartTests {
  @Test func onlyARefusalThatWaitingCannotMendStopsTheStart() {
    #expect(SharedRegistry.isRefusal("28P01"), "bad password")
    #expect(SharedRegistry.isRefusal("28000"), "no such role")
    #expect(SharedRegistry.isRefusal("3D000"), "no such database")
    #expect(!SharedRegistry.isRefusal("57P03"), "starting up: the mesh starts and connects later")
    #expect(!SharedRegistry.isRefusal(nil))
  }
}
