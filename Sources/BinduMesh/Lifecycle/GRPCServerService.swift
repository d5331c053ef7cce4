import BinduMeshConfig
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle

/// Runs a grpc-swift `GRPCServer` as a `Service`: serves until graceful shutdown, then lets
/// open calls finish. A server stopped earlier (a hand-over) waits for the mesh's shutdown.
/// Logs the address bound once it listens (the port the system picked for a port of 0) and
/// tells ``ListeningAddresses``.
struct GRPCServerService: Service {
  let server: GRPCServer<HTTP2ServerTransport.Posix>
  /// What the log line calls the server ("registry").
  let name: String
  let addresses: ListeningAddresses
  let logger: Logger

  func run() async throws {
    try await withGracefulShutdownHandler {
      try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        if let address = try? await server.transport.listeningAddress {
          let listen = HostPort(address)
          logger.info("\(name) listener ready", metadata: ["mesh.listen": "\(listen?.description ?? "\(address)")"])
          if let listen { addresses.serving(name, at: listen, logger: logger) }
        }
      }
    } onGracefulShutdown: {
      server.beginGracefulShutdown()
    }
    try? await gracefulShutdown()
  }
}
