import Foundation
import Testing

@testable import BinduMesh
@testable import BinduMeshConfig

@Suite struct ConfigTests {
  @Test func policyIsReadGloballyAndPerPool() throws {
    let yaml = """
      health: {interval: 500ms, unhealthy_threshold: 3}
      retry: {max_attempts: 2}
      pools:
        - agent: a
          health: {timeout: 100ms}
          dns: replicas.default.svc:50051
        - agent: b
      """
    let config = try MeshConfig(yaml: yaml, source: "t.yaml")
    #expect(config.policy.health.interval == .milliseconds(500))
    #expect(config.policy.retry.maxAttempts == 2)
    let own = try #require(config.pools[0].policy)
    #expect(own.health.interval == .milliseconds(500) && own.health.unhealthyThreshold == 3)
    #expect(own.health.timeout == .milliseconds(100))
    #expect(config.pools[0].dns == HostPort(host: "replicas.default.svc", port: 50051))
    #expect(config.pools[1].policy == nil)
    #expect(throws: ConfigError.self) { try MeshConfig(yaml: "retry: {max_attempts: 0}", source: "t.yaml") }
    #expect(throws: ConfigError.self) { try MeshConfig(yaml: "health: {interval: fast}", source: "t.yaml") }
  }

  @Test func emptyFileKeepsEveryDefault() throws {
    let config = try MeshConfig(yaml: "", source: "empty.yaml")
    #expect(config == .defaults)
    #expect(config.core.address == HostPort(host: "127.0.0.1", port: 3774))
    #expect(config.registry.listen == HostPort(host: "127.0.0.1", port: 3775))
    #expect(config.callbacks.firstPort == 3776)
  }

  @Test func exampleConfigParsesAndMatchesTheDefaults() throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../Config/bindu-mesh.yaml").standardized.path
    let config = try MeshConfig.load(file: path)
    #expect(config == .defaults, "Config/bindu-mesh.yaml documents the defaults; keep them equal")
  }

  @Test func severalCoresAndTheBalancerAreRead() throws {
    let yaml = """
      core:
        heartbeat_interval: 5s
      cores:
        - address: 127.0.0.1:3774
          agent_url: http://localhost:3773
        - address: 127.0.0.1:3784
      balancer:
        max_concurrent_calls: 4
      pools:
        - agent: a
          balancer: {policy: round_robin}
      state:
        dir: /var/lib/bindu-mesh
      """
    let config = try MeshConfig(yaml: yaml, source: "t.yaml")
    #expect(config.coreTargets.map(\.address.description) == ["127.0.0.1:3774", "127.0.0.1:3784"])
    #expect(config.coreTargets.map(\.agentURL) == ["http://localhost:3773", nil])
    #expect(config.core.heartbeatInterval == .seconds(5))
    #expect(config.policy.balancer.policy == .leastRequest && config.policy.balancer.maxConcurrentCalls == 4)
    let pool = try #require(config.pools.first?.policy)
    #expect(pool.balancer.policy == .roundRobin && pool.balancer.maxConcurrentCalls == 4)
    #expect(config.state.dir == "/var/lib/bindu-mesh")
    #expect(MeshConfig.defaults.coreTargets == [MeshConfig.CoreTarget(address: HostPort(host: "127.0.0.1", port: 3774))])
  }

  @Test func aCoreGivenAnAgentURLGetsItAsTheDeploymentURL() throws {
    let definition = try AgentDefinition(
      configJSON: #"{"name":"a","deployment":{"url":"http://localhost:3773","expose":true}}"#, skills: [])
    let sent = definition.configJSON(agentURL: "http://localhost:3783")
    let object = try #require(try JSONSerialization.jsonObject(with: Data(sent.utf8)) as? [String: Any])
    let deployment = try #require(object["deployment"] as? [String: Any])
    #expect(deployment["url"] as? String == "http://localhost:3783")
    #expect(deployment["expose"] as? Bool == true)
    #expect(definition.configJSON(agentURL: nil) == definition.configJSON)
  }

  @Test func fullPoolIsRead() throws {
    let yaml = """
      core:
        address: 10.0.0.5:4000
        heartbeat_interval: 500ms
      pools:
        - agent: echo-agent
          listen: "[::1]:0"
          config: {name: echo-agent, author: dev@example.com, deployment: {url: "http://localhost:3773", expose: true}}
          skills:
            - {name: echo, tags: [a, b]}
          replicas: [127.0.0.1:50051, "host.example:50052"]
      """
    let config = try MeshConfig(yaml: yaml, source: "t.yaml")
    #expect(config.core.address == HostPort(host: "10.0.0.5", port: 4000))
    #expect(config.core.heartbeatInterval == .milliseconds(500))
    let pool = try #require(config.pools.first)
    #expect(pool.listen == HostPort(host: "::1", port: 0))
    #expect(pool.replicas.map(\.description) == ["127.0.0.1:50051", "host.example:50052"])
    #expect(pool.skills.first?.tags == ["a", "b"])
    let json = try #require(pool.agentConfigJSON)
    let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    #expect((object?["deployment"] as? [String: Any])?["expose"] as? Bool == true)
  }

  @Test(arguments: [
    ("core: [unclosed", "not valid YAML"),
    ("core:\n  adress: 1.2.3.4:1\n", "t.yaml:2:3: core.adress: unknown key"),
    ("registry:\n  listen: nowhere\n", "registry.listen: expected host:port"),
    ("registry:\n  listen: 1.2.3.4:70000\n", "registry.listen: expected host:port"),
    ("core:\n  heartbeat_interval: soon\n", "core.heartbeat_interval: expected a positive duration"),
    ("upstream:\n  max_message_bytes: -1\n", "upstream.max_message_bytes: expected 1..."),
    ("pools:\n  - listen: 127.0.0.1:1\n", "pools[0]: missing key \"agent\""),
    ("pools:\n  - agent: a\n  - agent: a\n", "pools[1]: agent \"a\" is declared by more than one pool"),
    ("pools:\n  - agent: a\n    config: {name: b}\n", "pools[0].config: the config's name is \"b\""),
    ("pools:\n  - agent: a\n    config_file: missing.json\n", "pools[0].config_file: cannot read"),
    ("registry:\n  rewrite_loopback_callbacks: maybe\n", "expected true or false"),
    ("balancer:\n  policy: random\n", "t.yaml:2:11: balancer.policy: expected one of least_request, round_robin"),
    ("pools:\n  - agent: a\n    balancer: {max_concurrent_calls: -2}\n", "pools[0].balancer.max_concurrent_calls: expected 0..."),
    ("core:\n  address: 1.2.3.4:1\ncores:\n  - address: 1.2.3.4:2\n", "core.address: the config lists cores"),
    ("cores:\n  - agent_url: http://x:1\n", "cores[0]: missing key \"address\""),
    ("cores:\n  - address: 1.2.3.4:2\n  - address: 1.2.3.4:2\n", "cores[1]: core 1.2.3.4:2 is listed more than once"),
    ("cores:\n  - address: 1.2.3.4:2\n    agent_url: nowhere\n", "cores[0].agent_url: expected a URL"),
    ("state:\n  dir: \"\"\n", "state.dir: expected a folder path"),
    ("callbacks:\n  max_buffered_bytes: 2097152\n",
     "t.yaml:2:23: callbacks.max_buffered_bytes: max_buffered_bytes must be at least 7602176 with max_concurrent_streams 100"),
  ])
  func badInputNamesFileKeyAndExpectation(yaml: String, expected: String) {
    #expect {
      try MeshConfig(yaml: yaml, source: "t.yaml")
    } throws: { error in
      let text = "\(error)"
      return error is ConfigError && text.hasPrefix("t.yaml") && text.contains(expected)
    }
  }

  @Test func hostPortParsing() {
    #expect(HostPort(parsing: "localhost:80") == HostPort(host: "localhost", port: 80))
    #expect(HostPort(parsing: "[::]:5")?.isWildcard == true)
    #expect(HostPort(parsing: "127.0.0.9:5")?.isLoopback == true)
    #expect(HostPort(parsing: "::1:5") == nil)
    #expect(HostPort(parsing: "host") == nil)
    #expect(HostPort(parsing: ":80") == nil)
    #expect(HostPort(host: "::1", port: 9).description == "[::1]:9")
  }
}

/// `Config/bindu-mesh.yaml` is the config reference: it must name every key the reader accepts,
/// and no key the reader does not.
@Suite struct ConfigReferenceTests {
  let text: String = {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../Config/bindu-mesh.yaml").standardized.path
    return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
  }()

  /// Keys written at the start of a line, commented out or not.
  var documentedKeys: Set<String> {
    let pattern = /^[\s#]*(?:- )?([a-z_]+):/
    return Set(text.split(separator: "\n").compactMap { line in
      (try? pattern.firstMatch(in: String(line))).map { String($0.1) }
    })
  }

  @Test func everyKeyIsDocumented() {
    let missing = ConfigKeys.all.filter { path in
      !documentedKeys.contains(String(path.split(separator: ".").last!.replacingOccurrences(of: "[]", with: "")))
    }
    #expect(missing.isEmpty, "keys missing from Config/bindu-mesh.yaml: \(missing)")
  }

  @Test func noUnknownKeyIsDocumented() {
    let known = Set(ConfigKeys.all.map { String($0.split(separator: ".").last!.replacingOccurrences(of: "[]", with: "")) })
    // Keys of the agent's own config JSON in the pool example.
    let agentConfigKeys: Set<String> = ["deployment"]
    let unknown = documentedKeys.subtracting(known).subtracting(agentConfigKeys)
    #expect(unknown.isEmpty, "Config/bindu-mesh.yaml documents keys the reader does not accept: \(unknown)")
  }
}
