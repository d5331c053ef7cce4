import BinduHTTP2
import BinduMeshConfig
import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL

/// One multiplexed HTTP/2 connection from one event loop to one replica.
///
/// Lives on its event loop: every method must be called there. It connects on first use, gives
/// each call a stream on the same connection, and connects again after the connection closes
/// or stops taking streams (a GOAWAY, stream IDs used up). After a failed connect it waits
/// (100 ms, doubled up to `upstream.reconnect_max_backoff`) before trying again: calls meanwhile
/// fail at once and move to another replica. ``drain()`` stops new streams and lets the open
/// ones finish.
package final class UpstreamConnection: @unchecked Sendable {
  private enum State {
    case idle
    case connecting(EventLoopFuture<Void>)
    case ready(any Channel, UpstreamStreams)
    /// The last connect failed; no new attempt before `until`.
    case backingOff(until: NIODeadline, error: any Error)
    case drained
  }

  package let eventLoop: any EventLoop
  let address: HostPort
  private let config: MeshConfig.Upstream
  private var security: UpstreamTLSContext?
  private let logger: Logger
  private var state: State = .idle
  /// The dial under way uses TLS settings replaced since: retire its connection once made.
  private var retireWhenReady = false
  private var backoff = ReconnectBackoff()
  /// The client metrics of the last method called on this connection.
  private var lastClientMetrics = LastCallMetrics()

  init(
    eventLoop: any EventLoop, address: HostPort, config: MeshConfig.Upstream, security: UpstreamTLSContext?,
    logger: Logger
  ) {
    self.eventLoop = eventLoop
    self.address = address
    self.config = config
    self.security = security
    self.logger = logger
  }

  /// The client metrics of calls to `path` on this connection's endpoint, without a lock when
  /// the last call here had the same method; `lookUp` finds them otherwise.
  func clientMetrics(path: String, lookUp: (String) -> GRPCCallMetrics) -> GRPCCallMetrics {
    lastClientMetrics.metrics(path: path, lookUp: lookUp)
  }

  /// Opens a stream for `delegate` when the connection is up and takes new streams; `nil`
  /// otherwise: ``openStreamAfterConnecting(_:then:)`` then opens the way.
  package func openStream(_ delegate: any UpstreamStreamDelegate) -> UpstreamStream? {
    eventLoop.preconditionInEventLoop()
    guard case .ready(let channel, let streams) = state else { return nil }
    if let stream = streams.open(delegate) { return stream }
    if streams.waitsForStreamSlot { return nil }  // a slot frees when a stream ends
    // A GOAWAY or stream IDs used up: the old connection finishes its calls and closes.
    channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    state = .idle
    return nil
  }

  /// Connects (at once when ready, failing at once while draining or backing off), then opens
  /// a stream for `delegate`, waiting for one to end while the replica's concurrency limit is
  /// reached; `then` gets the stream, or why there is none — nothing has been sent to the
  /// replica in that case.
  package func openStreamAfterConnecting(
    _ delegate: any UpstreamStreamDelegate, then: @escaping (Result<UpstreamStream, any Error>) -> Void
  ) {
    connect().assumeIsolated().whenComplete { result in
      switch result {
      case .failure(let error):
        then(.failure(error))
      case .success:
        if let stream = self.openStream(delegate) {
          then(.success(stream))
        } else if case .ready(_, let streams) = self.state, streams.waitsForStreamSlot {
          streams.whenStreamSlotFrees { self.openStreamAfterConnecting(delegate, then: then) }
        } else {
          then(.failure(UpstreamError.takesNoNewStreams(self.address)))
        }
      }
    }
  }

  private func connect() -> EventLoopFuture<Void> {
    eventLoop.preconditionInEventLoop()
    switch state {
    case .ready:
      return eventLoop.makeSucceededVoidFuture()
    case .connecting(let future):
      return future
    case .drained:
      return eventLoop.makeFailedFuture(UpstreamError.drained(address))
    case .backingOff(let until, let error) where NIODeadline.now() < until:
      return eventLoop.makeFailedFuture(UpstreamError.backingOff(address, error))
    case .idle, .backingOff:
      let future = dial()
      state = .connecting(future)
      return future
    }
  }

  /// Uses `security` (or plaintext) for connections made from now on: the current connection
  /// takes no new stream and closes once its calls have finished (as after a GOAWAY), and the
  /// next call dials with the new settings.
  func useTLS(_ security: UpstreamTLSContext?) {
    eventLoop.preconditionInEventLoop()
    self.security = security
    switch state {
    case .ready: retireCurrent()
    case .connecting: retireWhenReady = true
    case .backingOff:
      state = .idle
      backoff.reset()
    case .idle, .drained: break
    }
  }

  /// The current connection takes no new stream and closes once its calls have finished.
  private func retireCurrent() {
    guard case .ready(let channel, _) = state else { return }
    channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    state = .idle
  }

  /// Stops new streams; the connection closes when its open streams have finished.
  func drain() {
    eventLoop.preconditionInEventLoop()
    if case .ready(let channel, _) = state {
      channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
    state = .drained
  }

  private func dial() -> EventLoopFuture<Void> {
    let upstream = config
    let liveness = UpstreamLiveness(config: config, logger: logger.with("mesh.replica", "\(address)"))
    let activation = eventLoop.makePromise(of: Void.self)
    let streams = UpstreamStreams(
      liveness: liveness, eventLoop: eventLoop, activation: activation, awaitsHandshake: security != nil)
    let handlers = NIOLoopBound(streams, eventLoop: eventLoop)
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
          let connection = HTTP2Connection(mode: .client, configuration: .replica(upstream), delegate: handlers.value)
          handlers.value.connection = connection
          try sync.addHandler(connection)
        }
      }
      .connect(host: address.host, port: address.port)
      .flatMap { channel in activation.futureResult.map { channel } }

    future.assumeIsolated().whenComplete { result in
      switch result {
      case .success(let channel):
        if case .connecting = self.state {
          self.state = .ready(channel, streams)
          self.backoff.reset()
          self.logger.debug("connected to replica", metadata: ["mesh.replica": "\(self.address)"])
          if self.retireWhenReady {
            // Calls waiting for this connection use it; it closes once they have finished.
            self.retireWhenReady = false
            self.eventLoop.assumeIsolated().execute { self.retireCurrent() }
          }
        } else {
          channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
          if case .ready(let current, _) = self.state, current === channel { self.state = .idle }
        }
      case .failure(let error):
        self.retireWhenReady = false
        if case .connecting = self.state {
          let wait = self.backoff.failed(limit: self.config.reconnectMaxBackoff.timeAmount)
          self.state = .backingOff(until: .now() + wait, error: error)
        }
        self.logger.debug(
          "cannot connect to replica", metadata: ["mesh.replica": "\(self.address)", "error": "\(error)"])
      }
    }
    return future.map { _ in }
  }
}

/// Failures of the mesh's connections to replicas.
enum UpstreamError: Error, CustomStringConvertible {
  case drained(HostPort)
  case backingOff(HostPort, any Error)
  case closedBeforeReady(tls: Bool)
  case takesNoNewStreams(HostPort)
  var description: String {
    switch self {
    case .takesNoNewStreams(let address): "the connection to \(address) takes no new calls"
    case .closedBeforeReady(let tls):
      tls
        ? "the connection closed before it was ready: TLS handshake failed or the replica's identity was refused (see the log)"
        : "the connection closed before it was ready"
    case .drained(let address): "replica \(address) is leaving the pool"
    case .backingOff(let address, let error): "waiting before connecting to \(address) again (last: \(error))"
    }
  }
}
