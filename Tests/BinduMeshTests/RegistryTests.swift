import BinduContract
import Testing

@testable import BinduMesh
@testable import BinduMeshConfig

@Suite struct RegistryTests {
  @Test func definitionNeedsAJSONObjectWithAName() {
    #expect(throws: AgentDefinitionError.self) { try AgentDefinition(configJSON: "{", skills: []) }
    #expect(throws: AgentDefinitionError(reason: "config_json must be a JSON object")) {
      try AgentDefinition(configJSON: "[1]", skills: [])
    }
    #expect(throws: AgentDefinitionError.self) { try AgentDefinition(configJSON: #"{"name": ""}"#, skills: []) }
  }

  @Test func conflictNamesTheKeysThatDiffer() throws {
    let pool = try AgentDefinition(configJSON: #"{"name":"a","description":"x","author":"p"}"#, skills: [])
    let same = try AgentDefinition(configJSON: #"{"author":"p", "description":"x", "name":"a"}"#, skills: [])
    let other = try AgentDefinition(configJSON: #"{"name":"a","description":"y","extra":1,"author":"p"}"#, skills: [])
    #expect(pool.conflict(with: same) == nil)
    #expect(pool.conflict(with: other) == #"config differs from pool "a" at "description", "extra""#)
    let skilled = try AgentDefinition(
      configJSON: #"{"name":"a","description":"x","author":"p"}"#, skills: [.with { $0.name = "s" }])
    #expect(pool.conflict(with: skilled)?.contains("skills differ") == true)
  }

  @Test func peerHostOfGRPCPeers() {
    #expect(RegistryService.peerHost("ipv4:10.1.2.3:5555") == "10.1.2.3")
    #expect(RegistryService.peerHost("ipv6:[fe80::1]:5555") == "fe80::1")
    #expect(RegistryService.peerHost("unix:/tmp/x") == nil)
  }
}
