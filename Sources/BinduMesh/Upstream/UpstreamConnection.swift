import Logging
import NIOCore
import NIOHTTP2
import NIOPosix

/// One multiplexed HTTP/2 connection from one event loop to one replica.
///
/// Lives on its event loop: every method must be called there. It connects on first use, hands
/// out new streams on the same connection, and connects again on the next call after the
/// connection closes. ``drain()`` stops new streams and lets the open ones finish.
final class UpstreamConnection: @unchecked Sendable {
  private enum State {
    case idle
    case connecting(EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>)
    case ready(any Channel, NIOHTTP2Handler.StreamMultiplexer)
    case drained
  }

  let eventLoop: any EventLoop
  let address: HostPort
  private let config: MeshConfig.Upstream
  private let logger: Logger
  private var state: State = .idle

  init(eventLoop: any EventLoop, address: HostPort, config: MeshConfig.Upstream, logger: Logger) {
    self.eventLoop = eventLoop
    self.address = address
    self.config = config
    self.logger = logger
  }

  /// Opens a new stream to the replica, with `initializer` setting up its pipeline.
  func openStream(
    _ initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
  ) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    return multiplexer().flatMap { multiplexer in
      let promise = self.eventLoop.makePromise(of: (any Channel).self)
      multiplexer.createStreamChannel(promise: promise, initializer)
      return promise.futureResult
    }
  }

  /// Stops new streams; the connection closes when its open streams have finished.
  func drain() {
    eventLoop.preconditionInEventLoop()
    if case .ready(let channel, _) = state {
      channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
    state = .drained
  }

  private func multiplexer() -> EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> {
    switch state {
    case .ready(_, let multiplexer):
      return eventLoop.makeSucceededFuture(multiplexer)
    case .connecting(let future):
      return future
    case .drained:
      return eventLoop.makeFailedFuture(UpstreamError.drained(address))
    case .idle:
      let future = connect()
      state = .connecting(future)
      return future
    }
  }

  private func connect() -> EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> {
    let upstream = config
    let nanos = config.connectTimeout.components.seconds * 1_000_000_000
      + config.connectTimeout.components.attoseconds / 1_000_000_000
    let future = ClientBootstrap(group: eventLoop)
      .connectTimeout(.nanoseconds(nanos))
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client,
            connectionConfiguration: .mesh(upstream),
            streamConfiguration: .mesh(upstream),
            inboundStreamInitializer: { $0.close() }
          )
        }
      }
      .connect(host: address.host, port: address.port)
      .flatMapThrowing { channel -> (any Channel, NIOHTTP2Handler.StreamMultiplexer) in
        let multiplexer = try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).syncMultiplexer()
        return (channel, multiplexer)
      }

    future.whenComplete { result in
      switch result {
      case .success(let (channel, multiplexer)):
        if case .connecting = self.state {
          self.state = .ready(channel, multiplexer)
          self.logger.debug("connected to replica", metadata: ["mesh.replica": "\(self.address)"])
        } else {
          channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
          if case .ready(let current, _) = self.state, current === channel { self.state = .idle }
        }
      case .failure(let error):
        if case .connecting = self.state { self.state = .idle }
        self.logger.debug(
          "cannot connect to replica", metadata: ["mesh.replica": "\(self.address)", "error": "\(error)"])
      }
    }
    return future.map { $0.1 }
  }
}

/// Failures of the mesh's connections to replicas.
enum UpstreamError: Error, CustomStringConvertible {
  case drained(HostPort)
  var description: String {
    switch self {
    case .drained(let address): "replica \(address) is leaving the pool"
    }
  }
}
