import BinduContract
import BinduMeshConfig
import Foundation
import SwiftProtobuf

/// What the registry keeps across the mesh's restarts: every pool that has a definition, with
/// its callback port, and every registered replica.
///
/// Static and DNS endpoints are not kept: the config makes them again. The file is JSON, with a
/// `format` number that a newer mesh can migrate from and an older one refuses.
package struct RegistrySnapshot: Codable, Sendable, Hashable {
  /// The format this version writes and reads.
  package static let currentFormat = 1

  /// The file's format number.
  package var format: Int
  /// Pools, by agent name order.
  package var pools: [Pool]

  /// One pool.
  package struct Pool: Codable, Sendable, Hashable {
    /// The agent's name.
    package var agent: String
    /// Whether the config declared it (its definition then comes from the config).
    package var declared: Bool
    /// The port of its callback listener, reused after a restart.
    package var callbackPort: Int
    /// The agent's config JSON, as registered with the core.
    package var configJSON: String?
    /// The agent's skills, each as protobuf JSON.
    package var skills: [String]
    /// Registered replicas.
    package var members: [Member]
  }

  /// One registered replica.
  package struct Member: Codable, Sendable, Hashable {
    /// Its membership id (`agent_id` of its heartbeats).
    package var id: String
    /// Where its `AgentHandler` is reached, `host:port`.
    package var address: String
  }

  /// An empty registry.
  package static var empty: Self { Self(format: currentFormat, pools: []) }
}

extension RegistrySnapshot.Pool {
  /// The pool's definition, if it has one.
  func definition() throws -> AgentDefinition? {
    guard let configJSON else { return nil }
    return try AgentDefinition(configJSON: configJSON, skillsJSON: skills)
  }
}

extension AgentDefinition {
  /// A definition kept as JSON (the state file, the shared registry): skills as protobuf JSON.
  init(configJSON: String, skillsJSON: [String]) throws {
    try self.init(configJSON: configJSON, skills: try skillsJSON.map { try Bindu_Grpc_SkillDefinition(jsonString: $0) })
  }

  /// The skills as protobuf JSON, as the snapshot keeps them.
  var skillsJSON: [String] { skills.compactMap { try? $0.jsonString() } }
}
