import BinduContract
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle
import Synchronization
import Testing

@testable import BinduMesh

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
      try await withMesh(config, resolver: resolver) { callbackPort in
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

  /// Asks until the answer comes from `host` (round-robin reaches it within a few calls).
  private func answeringHosts(_ client: Bindu_Grpc_AgentHandler.Client<HTTP2ClientTransport.Posix>) async throws -> Set<String> {
    var hosts: Set<String> = []
    for _ in 0..<6 {
      let answer = try await client.handleMessages(.with { $0.messages = [.with { $0.content = "who" }] }).content
      hosts.insert(String(answer.dropFirst().prefix { $0 != "]" }))
    }
    return hosts
  }
}

struct TestFailure: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Retries `condition` for up to `timeout`.
func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if (try? await condition()) == true { return }
    try await Task.sleep(for: .milliseconds(100))
  }
  throw TestFailure("condition not met within \(timeout)")
}

/// A resolver whose answers the test sets.
final class StubResolver: DNSResolver {
  private let records = Mutex<[HostPort]>([])
  func set(_ hosts: [String], port: Int) { records.withLock { $0 = hosts.map { HostPort(host: $0, port: port) } } }
  func resolve(host: String, port: Int) async throws -> [HostPort] { records.withLock { $0 } }
}

/// Runs a whole mesh for `body`, handing it the first declared pool's callback port.
func withMesh(
  _ config: MeshConfig, resolver: any DNSResolver = SystemDNSResolver(), _ body: (Int) async throws -> Void
) async throws {
  let logger = Logger(label: "test")
  let mesh = try await Mesh.make(config: config, logger: logger, resolver: resolver)
  let group = ServiceGroup(configuration: .init(services: mesh.services.map { .init(service: $0) }, logger: logger))
  try await withThrowingTaskGroup(of: Void.self) { tasks in
    tasks.addTask { try await group.run() }
    defer { Task { await group.triggerGracefulShutdown() } }
    let port = try #require(await mesh.directory.all.first?.listenAddress.port)
    try await body(port)
    await group.triggerGracefulShutdown()
    try await tasks.waitForAll()
  }
}

/// Starts an echo replica on each host with one shared port; hands the port to `body`.
func withReplicas(hosts: [String], _ body: (Int) async throws -> Void) async throws {
  var servers: [GRPCServer<HTTP2ServerTransport.Posix>] = []
  var port = 0
  for host in hosts {
    let server = GRPCServer(
      transport: .http2NIOPosix(address: .ipv4(host: host, port: port), transportSecurity: .plaintext),
      services: [TestReplica(name: host)])
    servers.append(server)
  }
  try await withThrowingTaskGroup(of: Void.self) { group in
    // The first binds port 0; the others take its port on their own address.
    let first = servers[0]
    group.addTask { try await first.serve() }
    port = try #require(try await first.listeningAddress?.ipv4?.port)
    for (index, host) in hosts.enumerated().dropFirst() {
      servers[index] = GRPCServer(
        transport: .http2NIOPosix(address: .ipv4(host: host, port: port), transportSecurity: .plaintext),
        services: [TestReplica(name: host)])
      let server = servers[index]
      group.addTask { try await server.serve() }
      _ = try await server.listeningAddress
    }
    try await body(port)
    servers.forEach { $0.beginGracefulShutdown() }
    try await group.waitForAll()
  }
}

/// A minimal AgentHandler: answers `[name] text`, after `sleep:<ms> ` if asked.
struct TestReplica: Bindu_Grpc_AgentHandler.SimpleServiceProtocol {
  let name: String

  func handleMessages(request: Bindu_Grpc_HandleRequest, context: ServerContext) async throws -> Bindu_Grpc_HandleResponse {
    var text = request.messages.last?.content ?? ""
    if text.hasPrefix("sleep:"), let space = text.firstIndex(of: " "), let ms = Int(text.dropFirst(6).prefix { $0 != " " }) {
      try await Task.sleep(for: .milliseconds(ms))
      text = String(text[text.index(after: space)...])
    }
    return .with { $0.content = "[\(name)] \(text)" }
  }

  func handleMessagesStream(
    request: Bindu_Grpc_HandleRequest, response: RPCWriter<Bindu_Grpc_HandleResponse>, context: ServerContext
  ) async throws {
    try await response.write(try await handleMessages(request: request, context: context))
  }

  func getCapabilities(
    request: Bindu_Grpc_GetCapabilitiesRequest, context: ServerContext
  ) async throws -> Bindu_Grpc_GetCapabilitiesResponse {
    .with { $0.name = name }
  }

  func healthCheck(request: Bindu_Grpc_HealthCheckRequest, context: ServerContext) async throws -> Bindu_Grpc_HealthCheckResponse {
    .with { $0.healthy = true }
  }
}
