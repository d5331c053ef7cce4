import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceLifecycle

/// Runs a grpc-swift `GRPCServer` as a `Service`: serves until graceful shutdown, then lets
/// open calls finish. A server stopped earlier (a hand-over) waits for the mesh's shutdown.
struct GRPCServerService: Service {
  let server: GRPCServer<HTTP2ServerTransport.Posix>

  func run() async throws {
    try await withGracefulShutdownHandler {
      try await server.serve()
    } onGracefulShutdown: {
      server.beginGracefulShutdown()
    }
    try? await gracefulShutdown()
  }
}
