import Logging
import NIOCore
import NIOHTTP2

/// One connection from the core to a callback listener, after `NIOHTTP2Handler`: each stream
/// the core opens is a ``ProxyCall``, and this handler routes the stream's frames to it and
/// its answer back (through a ``FrameWriter``, which also returns the connection's window), and
/// drains the connection on shutdown.
///
/// Frames stay on the connection's pipeline: no channel per stream. Draining
/// (``ChannelShouldQuiesceEvent``) sends GOAWAY and closes the connection once its last call has
/// ended, or when `grace` runs out.
final class CallerConnectionHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  private let pool: ReplicaPool
  private let limits: MeshConfig.Upstream
  private let grace: TimeAmount
  private let logger: Logger
  private let writer = FrameWriter()
  private var calls: [HTTP2StreamID: ProxyCall] = [:]
  private var lastStreamID = HTTP2StreamID.rootStream
  private var draining = false
  /// The server metrics of the last method called here: calls on a connection mostly share one.
  private var lastServerMetrics: (path: String, metrics: GRPCCallMetrics)?

  init(pool: ReplicaPool, limits: MeshConfig.Upstream, grace: Duration, logger: Logger) {
    self.pool = pool
    self.limits = limits
    self.grace = grace.timeAmount
    self.logger = logger
  }

  /// Sends `payload` on the caller's stream `streamID` (flushed once per event-loop tick);
  /// `promise` completes once it is written.
  func write(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID, promise: EventLoopPromise<Void>? = nil) {
    writer.write(HTTP2Frame(streamID: streamID, payload: payload), promise: promise)
  }

  /// The pool's server metrics of calls to `path`, without a lock when the last call here had
  /// the same method.
  func serverMetrics(path: String) -> GRPCCallMetrics {
    if let last = lastServerMetrics, last.path == path { return last.metrics }
    let metrics = pool.serverMetrics(path: path)
    lastServerMetrics = (path, metrics)
    return metrics
  }

  func handlerAdded(context: ChannelHandlerContext) {
    writer.attach(context)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    writer.detach()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    switch frame.payload {
    case .headers:
      if let call = calls[frame.streamID] {
        call.received(frame.payload)
        return
      }
      let call = ProxyCall(
        caller: self, streamID: frame.streamID, eventLoop: context.eventLoop, pool: pool, limits: limits, logger: logger)
      calls[frame.streamID] = call
      lastStreamID = max(lastStreamID, frame.streamID)
      call.received(frame.payload)
    case .data:
      calls[frame.streamID]?.received(frame.payload)
    default:
      break  // SETTINGS, PING, WINDOW_UPDATE: NIOHTTP2Handler's; RST_STREAM comes as StreamClosedEvent
    }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let updated = event as? NIOHTTP2WindowUpdatedEvent {
      writer.returnConnectionWindow(after: updated)
    } else if let closed = event as? StreamClosedEvent {
      calls.removeValue(forKey: closed.streamID)?.callerClosed()
      if draining && calls.isEmpty { closeSoon(context) }
    } else if event is ChannelShouldQuiesceEvent {
      drain(context)
    } else if !(event is NIOHTTP2StreamCreatedEvent) {
      context.fireUserInboundEventTriggered(event)
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    let open = calls
    calls.removeAll()
    for call in open.values { call.callerClosed() }
    context.fireChannelInactive()
  }

  /// Tells the core no new calls are taken here (GOAWAY) and closes once the open ones end.
  private func drain(_ context: ChannelHandlerContext) {
    guard !draining else { return }
    draining = true
    writer.write(
      HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil)))
    if calls.isEmpty {
      closeSoon(context)
      return
    }
    let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
    context.eventLoop.scheduleTask(in: grace) { loopBound.value.close(promise: nil) }
  }

  /// Closes the connection after this tick's flush, so the last frames written leave first.
  private func closeSoon(_ context: ChannelHandlerContext) {
    let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
    context.eventLoop.execute { loopBound.value.close(promise: nil) }
  }
}
