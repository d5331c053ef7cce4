import BinduHTTP2
import BinduMeshConfig
import Logging
import NIOCore
import NIOHTTP2

/// Watches one connection to a replica for its ``UpstreamStreams`` (which tells it when a
/// stream ends, and passes on PING acknowledgements and draining): closes it when it has been
/// idle for `upstream.idle_timeout`, when the replica does not answer a keepalive PING within
/// `upstream.keepalive_timeout`, and when it is draining and its last stream has ended.
final class UpstreamLiveness {
  private let idleTimeout: TimeAmount?
  private let keepaliveInterval: TimeAmount?
  private let keepaliveTimeout: TimeAmount
  private let logger: Logger
  private var connection: HTTP2Connection?
  private var eventLoop: (any EventLoop)?
  /// Streams open on the connection: the connection's own count.
  private var openStreams: Int { connection?.openStreams ?? 0 }
  private var draining = false
  private var idleTimer: Scheduled<Void>?
  /// When the last stream ended (or the connection opened).
  private var idleSince = NIODeadline.now()
  private var keepaliveTimer: Scheduled<Void>?
  private var pingTimeout: Scheduled<Void>?
  private var pingsSent: UInt64 = 0

  init(config: MeshConfig.Upstream, logger: Logger) {
    self.idleTimeout = config.idleTimeout.map { $0.timeAmount }
    self.keepaliveInterval = config.keepaliveInterval.map { $0.timeAmount }
    self.keepaliveTimeout = config.keepaliveTimeout.timeAmount
    self.logger = logger
  }

  /// Starts watching `connection` (once it is up).
  func start(_ connection: HTTP2Connection, on eventLoop: any EventLoop) {
    self.connection = connection
    self.eventLoop = eventLoop
    idleSince = .now()
    scheduleIdleTimer()
    scheduleKeepalive()
  }

  /// Stops every timer (the connection closed).
  func stop() {
    idleTimer?.cancel()
    keepaliveTimer?.cancel()
    pingTimeout?.cancel()
    idleTimer = nil
    keepaliveTimer = nil
    pingTimeout = nil
    connection = nil
  }

  /// A stream of this connection has ended (the connection has forgotten it).
  func streamClosed() {
    guard openStreams == 0 else { return }
    if draining {
      connection?.closeSoon()
    } else {
      idleSince = .now()
      scheduleIdleTimer()
    }
  }

  /// The replica acknowledged a PING.
  func pingAcknowledged(_ data: HTTP2PingData) {
    guard data.integer == pingsSent else { return }
    pingTimeout?.cancel()
    pingTimeout = nil
  }

  /// No new streams: the connection closes once its last stream has ended.
  func drain() {
    draining = true
    if openStreams == 0 { connection?.closeSoon() }
  }

  /// Arms the idle timer unless it is armed: one timer per idle period, not one per call. When
  /// it fires, the connection closes if it has been idle for `idleTimeout` since its last
  /// stream ended, and the timer is armed again for the rest otherwise.
  private func scheduleIdleTimer(in delay: TimeAmount? = nil) {
    guard let idleTimeout, idleTimer == nil, let eventLoop, connection != nil else { return }
    idleTimer = eventLoop.assumeIsolated().scheduleTask(in: delay ?? idleTimeout) { [self] in
      idleTimer = nil
      guard openStreams == 0 else { return }  // armed again when the last stream ends
      let left = idleSince + idleTimeout - .now()
      guard left <= .zero else {
        scheduleIdleTimer(in: left)
        return
      }
      logger.debug("closing idle connection to replica")
      connection?.close()
    }
  }

  private func scheduleKeepalive() {
    guard let keepaliveInterval, keepaliveTimer == nil, let eventLoop, connection != nil else { return }
    keepaliveTimer = eventLoop.assumeIsolated().scheduleTask(in: keepaliveInterval) { [self] in
      keepaliveTimer = nil
      sendPing()
      scheduleKeepalive()
    }
  }

  private func sendPing() {
    guard pingTimeout == nil, let eventLoop, let connection else { return }  // an unanswered PING: its timer decides
    pingsSent += 1
    connection.write(.ping(HTTP2PingData(withInteger: pingsSent), ack: false), on: .rootStream)
    pingTimeout = eventLoop.assumeIsolated().scheduleTask(in: keepaliveTimeout) { [self] in
      pingTimeout = nil
      logger.warning("replica did not answer a keepalive PING; closing the connection")
      connection.close()
    }
  }
}
