import BinduContract
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle
import Synchronization
import Testing

@testable import BinduMesh
@testable import BinduMeshConfig

/// A DNS pool over real sockets: replicas on 127.0.0.1-3 with one port, a resolver double whose
/// records change between resolutions.
@Suite struct DNSPoolTests {
  @Test func recordsJoinAndRemovedOnesDrain() async throws {
    let resolver = StubResolver()
    try await withReplicas(hosts: ["127.0.0.1", "127.0.0.2", "127.0.0.3"]) { port in
      resolver.set(["127.0.0.1", "127.0.0.2"], port: port)
      var config = MeshConfig.defaults
      config.registry.listen = HostPort(host: "127.0.0.1", port: 0)
      config.admin.listen = HostPort(host: "127.0.0.1", port: 0)
      config.core.address = HostPort(host: "127.0.0.1", port: 1)
      var pool = MeshConfig.Pool(agent: "dns-agent", listen: HostPort(host: "127.0.0.1", port: 0))
      pool.dns = HostPort(host: "replicas.test", port: port)
      pool.dnsRefresh = .milliseconds(100)
      config.pools = [pool]
      config.policy.health.interval = .milliseconds(100)
      try await withMesh(config, resolver: resolver) { _, callbackPort in
        try await withGRPCClient(
          transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: callbackPort), transportSecurity: .plaintext)
        ) { grpc in
          let client = Bindu_Grpc_AgentHandler.Client(wrapping: grpc)
          try await eventually { try await answeringHosts(client) == ["127.0.0.1", "127.0.0.2"] }

          // Two slow calls at once, one on each replica (each goes to the least loaded), are in
          // flight when .1 leaves the records: both finish, the one on .1 included.
          async let first = client.handleMessages(.with { $0.messages = [.with { $0.content = "sleep:800 slow" }] })
          async let second = client.handleMessages(.with { $0.messages = [.with { $0.content = "sleep:800 slow" }] })
          try await Task.sleep(for: .milliseconds(150))
          resolver.set(["127.0.0.2", "127.0.0.3"], port: port)
          try await eventually { try await answeringHosts(client) == ["127.0.0.2", "127.0.0.3"] }
          let answers = [try await first.content, try await second.content]
          #expect(Set(answers.map { String($0.dropFirst().prefix { $0 != "]" }) }) == ["127.0.0.1", "127.0.0.2"])
          #expect(answers.allSatisfy { $0.hasSuffix("slow") })
        }
      }
    }
  }

  /// The hosts that answered six calls in a row.
  private func answeringHosts(_ client: Bindu_Grpc_AgentHandler.Client<HTTP2ClientTransport.Posix>) async throws -> Set<String> {
    var hosts: Set<String> = []
    for _ in 0..<6 {
      let answer = try await client.handleMessages(.with { $0.messages = [.with { $0.content = "who" }] }).content
      hosts.insert(String(answer.dropFirst().prefix { $0 != "]" }))
    }
    return hosts
  }
}
