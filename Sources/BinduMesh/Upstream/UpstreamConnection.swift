import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL

/// One multiplexed HTTP/2 connection from one event loop to one replica.
///
/// Lives on its event loop: every method must be called there. It connects on first use, hands
/// out new streams on the same connection, and connects again on the next call after the
/// connection closes. After a failed connect it waits (100 ms, doubled up to
/// `upstream.reconnect_max_backoff`) before trying again: calls meanwhile fail at once and move
/// to another replica. ``drain()`` stops new streams and lets the open ones finish.
final class UpstreamConnection: @unchecked Sendable {
  private enum State {
    case idle
    case connecting(EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>)
    case ready(any Channel, NIOHTTP2Handler.StreamMultiplexer, UpstreamLivenessHandler)
    /// The last connect failed; no new attempt before `until`.
    case backingOff(until: NIODeadline, error: any Error)
    case drained
  }

  let eventLoop: any EventLoop
  let address: HostPort
  private let config: MeshConfig.Upstream
  private let security: UpstreamSecurity?
  private let logger: Logger
  private var state: State = .idle
  private var backoff: TimeAmount = .milliseconds(100)

  init(
    eventLoop: any EventLoop, address: HostPort, config: MeshConfig.Upstream, security: UpstreamSecurity?,
    logger: Logger
  ) {
    self.eventLoop = eventLoop
    self.address = address
    self.config = config
    self.security = security
    self.logger = logger
  }

  /// Opens a new stream to the replica, with `initializer` setting up its pipeline.
  func openStream(
    _ initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
  ) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    if case .ready(_, let multiplexer, let liveness) = state {
      // The common case: the connection is up; no future chain.
      let promise = eventLoop.makePromise(of: (any Channel).self)
      let bound = NIOLoopBound(liveness, eventLoop: eventLoop)
      multiplexer.createStreamChannel(promise: promise) { stream in
        bound.value.streamOpened(stream)
        return initializer(stream)
      }
      return promise.futureResult
    }
    return ready().flatMap { multiplexer, liveness in
      let promise = self.eventLoop.makePromise(of: (any Channel).self)
      multiplexer.createStreamChannel(promise: promise) { stream in
        liveness.value.streamOpened(stream)
        return initializer(stream)
      }
      return promise.futureResult
    }
  }

  /// Stops new streams; the connection closes when its open streams have finished.
  func drain() {
    eventLoop.preconditionInEventLoop()
    if case .ready(let channel, _, _) = state {
      channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
    state = .drained
  }

  private typealias Ready = (NIOHTTP2Handler.StreamMultiplexer, NIOLoopBound<UpstreamLivenessHandler>)

  private func ready() -> EventLoopFuture<Ready> {
    switch state {
    case .ready(_, let multiplexer, let liveness):
      return eventLoop.makeSucceededFuture((multiplexer, NIOLoopBound(liveness, eventLoop: eventLoop)))
    case .connecting(let future):
      return future.map { ($0, NIOLoopBound(self.liveness!, eventLoop: self.eventLoop)) }
    case .drained:
      return eventLoop.makeFailedFuture(UpstreamError.drained(address))
    case .backingOff(let until, let error) where NIODeadline.now() < until:
      return eventLoop.makeFailedFuture(UpstreamError.backingOff(address, error))
    case .idle, .backingOff:
      let future = connect()
      state = .connecting(future)
      return future.map { ($0, NIOLoopBound(self.liveness!, eventLoop: self.eventLoop)) }
    }
  }

  /// The liveness handler of the connection being made or in use.
  private var liveness: UpstreamLivenessHandler?

  private func connect() -> EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> {
    let upstream = config
    let liveness = UpstreamLivenessHandler(config: config, logger: logger.with("mesh.replica", "\(address)"))
    self.liveness = liveness
    let bound = NIOLoopBound(liveness, eventLoop: eventLoop)
    let security = self.security
    let address = self.address
    let logger = self.logger
    let future = ClientBootstrap(group: eventLoop)
      .connectTimeout(config.connectTimeout.timeAmount)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          if let security {
            try sync.addHandler(
              NIOSSLClientHandler(context: security.material.context, serverHostname: security.serverHostname(for: address)))
            try sync.addHandler(
              PeerIdentityHandler(allowed: security.allowedIdentities, peerRole: "replica", logger: logger))
          }
          try sync.addHandler(FlushCoalescingHandler())
          _ = try sync.configureHTTP2Pipeline(
            mode: .client,
            connectionConfiguration: .meshUpstream(upstream),
            streamConfiguration: .mesh(upstream),
            inboundStreamInitializer: { $0.close() }
          )
          try sync.addHandler(bound.value)
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
          self.state = .ready(channel, multiplexer, liveness)
          self.backoff = .milliseconds(100)
          self.logger.debug("connected to replica", metadata: ["mesh.replica": "\(self.address)"])
        } else {
          channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
          if case .ready(let current, _, _) = self.state, current === channel { self.state = .idle }
        }
      case .failure(let error):
        if case .connecting = self.state {
          self.state = .backingOff(until: .now() + self.backoff, error: error)
          let limit = self.config.reconnectMaxBackoff.timeAmount
          self.backoff = min(self.backoff * 2, limit)
        }
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
  case backingOff(HostPort, any Error)
  var description: String {
    switch self {
    case .drained(let address): "replica \(address) is leaving the pool"
    case .backingOff(let address, let error): "waiting before connecting to \(address) again (last: \(error))"
    }
  }
}
