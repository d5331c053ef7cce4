import BinduMeshConfig
import NIOCore
import NIOPosix

/// A bare TCP connection held open to the core, so that the registrar learns at once when the
/// core goes away (a restart closes it) instead of at its next heartbeat.
///
/// Nothing is sent on it, so it costs the core one idle socket. A core may close a connection
/// that never speaks HTTP/2 after a while (grpcio: two minutes); the registrar then checks with
/// a heartbeat, which the core acknowledges, and opens a new one.
enum CoreWatch {
  /// Returns when the connection to `address` closes, when it cannot be opened, or when the
  /// task is cancelled.
  static func untilClosed(_ address: HostPort, group: any EventLoopGroup, connectTimeout: Duration) async {
    let channel: any Channel
    do {
      channel = try await ClientBootstrap(group: group)
        .connectTimeout(connectTimeout.timeAmount)
        .channelOption(.socketOption(.so_keepalive), value: 1)
        .connect(host: address.host, port: address.port)
        .get()
    } catch {
      return
    }
    await withTaskCancellationHandler {
      try? await channel.closeFuture.get()
    } onCancel: {
      channel.close(promise: nil)
    }
  }
}
