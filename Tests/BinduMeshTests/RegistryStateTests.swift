import BinduContract
import Foundation
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

@Suite struct MemberLivenessTests {
  let start = ContinuousClock.now
  let timeout = Duration.seconds(90)

  @Test func heartbeatsKeepAMember() {
    var member = MemberLiveness(joinedAt: start)
    #expect(member.signal == .joined)
    #expect(member.check(now: start + .seconds(89), timeout: timeout) == .alive)
    member.heartbeat(at: start + .seconds(80))
    #expect(member.signal == .heartbeat)
    #expect(member.check(now: start + .seconds(160), timeout: timeout) == .alive)
    #expect(member.check(now: start + .seconds(171), timeout: timeout) == .evict)
  }

  @Test func passingProbesKeepAMemberThatNeverHeartbeats() {
    var member = MemberLiveness(joinedAt: start)
    member.probePassed(at: start + .seconds(1))
    #expect(member.signal == .probe)
    member.probePassed(at: start + .seconds(100))
    // Past the timeout without a heartbeat: kept by its probes, said once.
    #expect(member.check(now: start + .seconds(120), timeout: timeout) == .keptByProbes)
    #expect(member.check(now: start + .seconds(121), timeout: timeout) == .alive)
    member.probePassed(at: start + .seconds(170))
    #expect(member.check(now: start + .seconds(250), timeout: timeout) == .alive)
    // Probes stop passing (the replica died): evicted a timeout after the last pass.
    #expect(member.check(now: start + .seconds(261), timeout: timeout) == .evict)
  }

  @Test func aHeartbeatAfterProbesAloneIsSaidAgainNextTime() {
    var member = MemberLiveness(joinedAt: start)
    member.probePassed(at: start + .seconds(95))
    #expect(member.check(now: start + .seconds(95), timeout: timeout) == .keptByProbes)
    member.heartbeat(at: start + .seconds(96))
    #expect(member.signal == .heartbeat)
    member.probePassed(at: start + .seconds(190))
    #expect(member.check(now: start + .seconds(190), timeout: timeout) == .keptByProbes)
  }

  @Test func aMemberWithNeitherSignalIsEvicted() {
    var member = MemberLiveness(joinedAt: start)
    #expect(member.check(now: start + .seconds(91), timeout: timeout) == .evict)
  }
}

@Suite struct RegistryStoreTests {
  func folder() -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("bindu-mesh-state-\(UUID().uuidString)").path
    return path
  }

  func snapshot() throws -> RegistrySnapshot {
    let skill = Bindu_Grpc_SkillDefinition.with {
      $0.name = "echo"
      $0.tags = ["a", "b"]
    }
    let definition = try AgentDefinition(configJSON: #"{"name":"echo-agent","author":"a@b"}"#, skills: [skill])
    return RegistrySnapshot(
      format: RegistrySnapshot.currentFormat,
      pools: [
        .init(
          agent: "echo-agent", declared: false, callbackPort: 3776, configJSON: definition.configJSON,
          skills: definition.skillsJSON, members: [.init(id: "m-1", address: "127.0.0.1:5001")])
      ])
  }

  @Test func aMissingFileIsAnEmptyRegistryAndTheFolderIsMade() throws {
    let dir = folder() + "/nested"
    let store = RegistryStore(directory: dir)
    #expect(try store.load() == .empty)
    var isDirectory: ObjCBool = false
    #expect(FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory) && isDirectory.boolValue)
  }

  @Test func whatIsSavedLoadsBackWithItsDefinition() throws {
    let dir = folder()
    let saved = try snapshot()
    try RegistryStore(directory: dir).save(saved)
    let loaded = try RegistryStore(directory: dir).load()
    #expect(loaded == saved)
    let definition = try #require(try loaded.pools[0].definition())
    #expect(definition.name == "echo-agent")
    #expect(definition.skills.first?.tags == ["a", "b"])
    #expect(!FileManager.default.fileExists(atPath: dir + "/registry.json.tmp"))
  }

  @Test func aDamagedFileIsRefusedWithItsPath() throws {
    let dir = folder()
    let store = RegistryStore(directory: dir)
    _ = try store.load()
    _ = FileManager.default.createFile(atPath: store.path, contents: Data("{\"format\": 1, \"pools\": [{\"agent\"".utf8))
    let error = #expect(throws: StateError.self) { try store.load() }
    #expect(error?.description.contains(store.path) == true)
    _ = FileManager.default.createFile(atPath: store.path, contents: Data([0xff, 0x00, 0x13]))
    let garbage = #expect(throws: StateError.self) { try store.load() }
    #expect(garbage?.description.contains("not a bindu-mesh registry") == true)
  }

  @Test func anotherFormatIsRefusedNotDropped() throws {
    let dir = folder()
    let store = RegistryStore(directory: dir)
    _ = try store.load()
    let newer = Data(#"{"format": 2, "pools": [], "more": true}"#.utf8)
    _ = FileManager.default.createFile(atPath: store.path, contents: newer)
    let error = #expect(throws: StateError.self) { try store.load() }
    #expect(error?.description.contains("format 2") == true)
    #expect(FileManager.default.contents(atPath: store.path) == newer)
  }

  @Test func aLeftoverTemporaryFileIsIgnored() throws {
    let dir = folder()
    let saved = try snapshot()
    let store = RegistryStore(directory: dir)
    try store.save(saved)
    // A crash between writing the new content and the rename leaves this behind.
    _ = FileManager.default.createFile(atPath: store.path + ".tmp", contents: Data("{\"form".utf8))
    #expect(try RegistryStore(directory: dir).load() == saved)
  }
}
