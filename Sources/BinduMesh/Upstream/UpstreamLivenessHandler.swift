import Logging
import NIOCore
import NIOHTTP2

/// Watches one connection to a replica, after ``UpstreamStreamsHandler`` (which counts its
/// streams here and passes on PING frames and connection events): closes it when it has been idle
/// for `upstream.idle_timeout`, when the replica does not answer a keepalive PING within
/// `upstream.keepalive_timeout`, and when it is draining and its last stream has ended.
final class UpstreamLivenessHandler: ChannelDuplexHandler {
  typealias InboundIn = HTTP2Frame
  typealias OutboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  private let idleTimeout: TimeAmount?
  private let keepaliveInterval: TimeAmount?
  private let keepaliveTimeout: TimeAmount
  private let logger: Logger
  private var context: ChannelHandlerContext?
  private var openStreams = 0
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

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    if context.channel.isActive { start(context) }
  }

  func channelActive(context: ChannelHandlerContext) {
    start(context)
    context.fireChannelActive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    stopTimers()
    self.context = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    stopTimers()
    context.fireChannelInactive()
  }

  /// Counts a stream opened on this connection.
  func streamOpened() {
    openStreams += 1
  }

  /// Counts a stream of this connection that has ended.
  func streamClosed() {
    openStreams -= 1
    guard openStreams == 0, let context else { return }
    if draining {
      context.close(promise: nil)
    } else {
      idleSince = .now()
      scheduleIdleTimer(context)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    if case .ping(let ping, ack: true) = frame.payload, ping.integer == pingsSent {
      pingTimeout?.cancel()
      pingTimeout = nil
    }
    context.fireChannelRead(data)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is ChannelShouldQuiesceEvent {
      draining = true
      if openStreams == 0 { context.close(promise: nil) }
    }
    context.fireUserInboundEventTriggered(event)
  }

  private func start(_ context: ChannelHandlerContext) {
    scheduleIdleTimer(context)
    scheduleKeepalive(context)
  }

  /// Arms the idle timer unless it is armed: one timer per idle period, not one per call. When
  /// it fires, the connection closes if it has been idle for `idleTimeout` since its last
  /// stream ended, and the timer is armed again for the rest otherwise.
  private func scheduleIdleTimer(_ context: ChannelHandlerContext, in delay: TimeAmount? = nil) {
    guard let idleTimeout, idleTimer == nil else { return }
    idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay ?? idleTimeout) { [self] in
      idleTimer = nil
      guard openStreams == 0 else { return }  // armed again when the last stream ends
      let left = idleSince + idleTimeout - .now()
      guard left <= .zero else {
        scheduleIdleTimer(context, in: left)
        return
      }
      logger.debug("closing idle connection to replica")
      context.close(promise: nil)
    }
  }

  private func scheduleKeepalive(_ context: ChannelHandlerContext) {
    guard let keepaliveInterval, keepaliveTimer == nil else { return }
    keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: keepaliveInterval) { [self] in
      keepaliveTimer = nil
      sendPing(context)
      scheduleKeepalive(context)
    }
  }

  private func sendPing(_ context: ChannelHandlerContext) {
    guard pingTimeout == nil else { return }  // the last PING is still unanswered: its timer decides
    pingsSent += 1
    let frame = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: pingsSent), ack: false))
    context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    pingTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: keepaliveTimeout) { [self] in
      pingTimeout = nil
      logger.warning("replica did not answer a keepalive PING; closing the connection")
      context.close(promise: nil)
    }
  }

  private func stopTimers() {
    idleTimer?.cancel()
    keepaliveTimer?.cancel()
    pingTimeout?.cancel()
    idleTimer = nil
    keepaliveTimer = nil
    pingTimeout = nil
  }
}
