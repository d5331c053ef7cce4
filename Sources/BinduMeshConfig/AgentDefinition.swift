import BinduContract
import Foundation

/// What the mesh registers with the core for one pool: the agent's config JSON and skills.
///
/// Replicas of one pool must agree on it: ``conflict(with:)`` says where two differ.
package struct AgentDefinition: Sendable, Hashable {
  /// The agent's `name` from its config: what names its pool.
  package let name: String
  /// The config JSON as the replica (or the config file) gave it; sent to the core unchanged.
  package let configJSON: String
  /// Skills sent to the core with the config.
  package let skills: [Bindu_Grpc_SkillDefinition]
  /// Top-level config entries in canonical JSON, for comparison.
  private let canonicalEntries: [String: String]

  /// Parses and checks a config.
  ///
  /// - Throws: ``AgentDefinitionError`` when the JSON is not an object with a non-empty `name`.
  package init(configJSON: String, skills: [Bindu_Grpc_SkillDefinition]) throws(AgentDefinitionError) {
    let object: Any
    do {
      object = try JSONSerialization.jsonObject(with: Data(configJSON.utf8), options: [.fragmentsAllowed])
    } catch {
      throw AgentDefinitionError(reason: "config_json is not valid JSON: \(error.localizedDescription)")
    }
    guard let dictionary = object as? [String: Any] else {
      throw AgentDefinitionError(reason: "config_json must be a JSON object")
    }
    guard let name = dictionary["name"] as? String, !name.trimmingCharacters(in: .whitespaces).isEmpty else {
      throw AgentDefinitionError(reason: "config_json has no \"name\" (a non-empty string naming the agent)")
    }
    self.name = name
    self.configJSON = configJSON
    self.skills = skills
    self.canonicalEntries = dictionary.mapValues { value in
      let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys, .fragmentsAllowed])
      return data.map { String(decoding: $0, as: UTF8.self) } ?? "\(value)"
    }
  }

  /// The config JSON with `deployment.url` set to `agentURL` (unchanged when `nil`): what a core
  /// of several on one host is given, since each core serves A2A on that URL's port.
  package func configJSON(agentURL: String?) -> String {
    guard let agentURL,
      var object = (try? JSONSerialization.jsonObject(with: Data(configJSON.utf8))) as? [String: Any]
    else { return configJSON }
    var deployment = object["deployment"] as? [String: Any] ?? [:]
    deployment["url"] = agentURL
    object["deployment"] = deployment
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return configJSON }
    return String(decoding: data, as: UTF8.self)
  }

  /// Why `other` cannot join a pool defined by `self`, or `nil` when they agree.
  package func conflict(with other: AgentDefinition) -> String? {
    let keys = Set(canonicalEntries.keys).union(other.canonicalEntries.keys)
    let differing = keys.filter { canonicalEntries[$0] != other.canonicalEntries[$0] }.sorted()
    if !differing.isEmpty {
      return "config differs from pool \"\(name)\" at \(differing.map { "\"\($0)\"" }.joined(separator: ", "))"
    }
    if skills != other.skills {
      let mine = skills.map(\.name).joined(separator: ", ")
      let theirs = other.skills.map(\.name).joined(separator: ", ")
      return "skills differ from pool \"\(name)\" (pool has [\(mine)], replica sent [\(theirs)])"
    }
    return nil
  }
}

/// A config that cannot define an agent.
package struct AgentDefinitionError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What is wrong, for `RegisterAgentResponse.error`.
  package var reason: String
  package var description: String { reason }
}

extension MeshConfig.Skill {
  /// The contract's form of this skill.
  package var definition: Bindu_Grpc_SkillDefinition {
    .with {
      $0.name = name
      $0.description_p = description
      $0.tags = tags
      $0.inputModes = inputModes
      $0.outputModes = outputModes
      $0.version = version
      $0.author = author
      $0.rawContent = rawContent
      $0.format = format
    }
  }
}
