import BinduContract
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import Testing

@testable import BinduMesh
@testable import BinduMeshConfig

/// A mesh with one static pool of ``TestReplica``s on 127.0.0.1 (each on a port of its own, port
/// 0 everywhere), and a gRPC client of the pool's callback listener: what a core sees.
struct StaticPool {
  /// The pool's agent.
  static let agent = "call-path-agent"

  let client: Bindu_Grpc_AgentHandler.Client<HTTP2ClientTransport.Posix>
  let replicas: [Replica]
  let mesh: Mesh

  /// A running replica.
  struct Replica: Sendable {
    let handler: TestReplica
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let port: Int
    var name: String { handler.name }
    var calls: Int { handler.calls.value }
    /// Stops serving: its listener closes (new connections are refused), its connections end.
    func stop() { server.beginGracefulShutdown() }
  }

  /// The answer to one message, or what the call failed with.
  func ask(_ text: String, timeout: Duration? = nil) async throws -> String {
    var options = CallOptions.defaults
    options.timeout = timeout
    return try await client.handleMessages(.with { $0.messages = [.with { $0.content = text }] }, options: options).content
  }

  /// The error a call fails with (a test failure if it does not).
  func failure(of text: String, timeout: Duration? = nil) async throws -> RPCError {
    do {
      let answer = try await ask(text, timeout: timeout)
      throw TestFailure("\"\(text)\" was answered: \(answer)")
    } catch let error as RPCError {
      return error
    }
  }

  /// The replica that gave an answer (`[r1] ...` → `r1`).
  static func replica(of answer: String) -> String { String(answer.dropFirst().prefix { $0 != "]" }) }

  /// Runs `body` with `replicas` (r1, r2, ...) behind a mesh configured by `configure` (its
  /// listeners are on port 0 and its core on a closed port: the pool serves whatever the core).
  static func run(
    _ replicas: [TestReplica], configure: (inout MeshConfig) -> Void = { _ in }, _ body: (StaticPool) async throws -> Void
  ) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      var running: [Replica] = []
      for handler in replicas {
        let server = GRPCServer(
          transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
          services: [handler])
        group.addTask { try await server.serve() }
        let port = try #require(try await server.listeningAddress?.ipv4?.port)
        running.append(Replica(handler: handler, server: server, port: port))
      }
      defer { running.forEach { $0.stop() } }
      var config = MeshConfig.defaults
      config.registry.listen = HostPort(host: "127.0.0.1", port: 0)
      config.admin.listen = HostPort(host: "127.0.0.1", port: 0)
      config.core.address = HostPort(host: "127.0.0.1", port: 1)
      var pool = MeshConfig.Pool(agent: agent, listen: HostPort(host: "127.0.0.1", port: 0))
      pool.replicas = running.map { HostPort(host: "127.0.0.1", port: $0.port) }
      config.pools = [pool]
      configure(&config)
      try await withMesh(config) { mesh, callbackPort in
        try await withGRPCClient(
          transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: callbackPort), transportSecurity: .plaintext)
        ) { grpc in
          let pool = StaticPool(client: Bindu_Grpc_AgentHandler.Client(wrapping: grpc), replicas: running, mesh: mesh)
          try await eventually { await pool.inRotation() == replicas.count }
          try await body(pool)
        }
      }
      running.forEach { $0.stop() }
      try await group.waitForAll()
    }
  }

  /// How many of the pool's endpoints are in rotation (what `/pools` shows as `in_rotation`).
  func inRotation() async -> Int {
    await mesh.directory.entry(forAgent: Self.agent)?.pool.endpointStates.filter(\.inRotation).count ?? 0
  }
}

extension TestReplica {
  /// `count` replicas named r1, r2, ...
  static func named(_ count: Int) -> [TestReplica] { (1...count).map { TestReplica(name: "r\($0)") } }
}
