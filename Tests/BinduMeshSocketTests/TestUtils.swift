import BinduContract
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle
import Synchronization
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

// Helpers the tests share: a mesh and echo replicas on real sockets, waiting for a condition,
// a resolver whose answers a test sets.

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

/// Runs a whole mesh for `body`, handing it the mesh and the first declared pool's callback port.
/// Its state directory is a new temporary one unless `config` names one (one mesh per state
/// directory is enforced, and tests run at once).
func withMesh(
  _ config: MeshConfig, resolver: any DNSResolver = SystemDNSResolver(), _ body: (Mesh, Int) async throws -> Void
) async throws {
  var config = config
  if config.state.dir == MeshConfig.State.defaults.dir {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bindu-mesh-test-\(UUID().uuidString)")
    config.state.dir = dir.path
  }
  defer { try? FileManager.default.removeItem(atPath: config.state.dir) }
  let logger = Logger(label: "test")
  let mesh = try await Mesh.make(config: config, logger: logger, resolver: resolver)
  let group = ServiceGroup(configuration: .init(services: mesh.services.map { .init(service: $0) }, logger: logger))
  try await withThrowingTaskGroup(of: Void.self) { tasks in
    tasks.addTask { try await group.run() }
    defer { Task { await group.triggerGracefulShutdown() } }
    let port = try #require(await mesh.directory.all.first?.listenAddress.port)
    try await body(mesh, port)
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

/// A minimal AgentHandler: answers `[name] text`, after `sleep:<ms> ` if asked; `fail:<message>`
/// fails INTERNAL. With `failing`, it fails every call with that code instead. It counts the calls
/// it took.
struct TestReplica: Bindu_Grpc_AgentHandler.SimpleServiceProtocol {
  let name: String
  var failing: RPCError.Code? = nil
  let calls = Counter()

  final class Counter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    func increment() { count.withLock { $0 += 1 } }
  }

  func handleMessages(request: Bindu_Grpc_HandleRequest, context: ServerContext) async throws -> Bindu_Grpc_HandleResponse {
    calls.increment()
    var text = request.messages.last?.content ?? ""
    if let failing { throw RPCError(code: failing, message: "\(name) fails every call") }
    if text.hasPrefix("fail:") { throw RPCError(code: .internalError, message: String(text.dropFirst(5))) }
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
