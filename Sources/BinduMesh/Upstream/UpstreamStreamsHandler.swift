import NIOCore
import NIOHTTP2
import NIOTLS

/// The streams of one connection to a replica, after `NIOHTTP2Handler` and before
/// ``UpstreamLivenessHandler``: gives each call a stream ID of its own on the shared
/// connection, routes the replica's frames to the call by that ID, and writes the calls' frames
/// (through a ``FrameWriter``, which also returns the connection's window).
///
/// Frames stay on the connection's pipeline: no channel per stream. A GOAWAY from the replica
/// stops new streams here; the calls on streams it says it never began move to another
/// replica.
final class UpstreamStreamsHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  /// Stream IDs are odd and below 2^31; a connection that has used them up is replaced.
  private static let lastUsableStreamID = HTTP2StreamID(Int32.max - 2)

  private let liveness: UpstreamLivenessHandler
  private let writer = FrameWriter()
  private var streams: [HTTP2StreamID: any UpstreamStreamDelegate] = [:]
  private var nextStreamID: HTTP2StreamID = 1
  private var goingAway = false
  /// The connection's last error, told to the calls it ends.
  private var failure: String?
  /// Completed when the connection is up and its HTTP/2 preface sent (frames written before
  /// would be lost) and, with TLS, the handshake done and the replica's identity accepted; failed
  /// when it closes first, so a call that could not reach the replica moves to another.
  private var activation: EventLoopPromise<Void>?
  private let awaitsHandshake: Bool

  init(liveness: UpstreamLivenessHandler, activation: EventLoopPromise<Void>, awaitsHandshake: Bool) {
    self.liveness = liveness
    self.activation = activation
    self.awaitsHandshake = awaitsHandshake
  }

  /// Whether a new stream may open on this connection.
  var acceptsStreams: Bool { writer.isAttached && !goingAway && nextStreamID < Self.lastUsableStreamID }

  /// Opens a stream reporting to `delegate`, or `nil` when this connection takes no new streams.
  func open(_ delegate: any UpstreamStreamDelegate) -> UpstreamStream? {
    guard acceptsStreams else { return nil }
    let id = nextStreamID
    nextStreamID = id.advanced(by: 2)
    streams[id] = delegate
    liveness.streamOpened()
    return UpstreamStream(id: id, connection: self)
  }

  func write(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>? = nil) {
    writer.write(frame, promise: promise)
  }

  func cancel(_ id: HTTP2StreamID) {
    guard remove(id) != nil else { return }
    write(HTTP2Frame(streamID: id, payload: .rstStream(.cancel)))
  }

  func handlerAdded(context: ChannelHandlerContext) {
    writer.attach(context)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    writer.detach()
    failActivation()
  }

  func channelActive(context: ChannelHandlerContext) {
    context.fireChannelActive()
    if !awaitsHandshake { succeedActivation() }
  }

  private func succeedActivation() {
    activation?.succeed()
    activation = nil
  }

  private func failActivation() {
    activation?.fail(UpstreamError.closedBeforeReady(tls: awaitsHandshake))
    activation = nil
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    switch frame.payload {
    case .headers, .data:
      streams[frame.streamID]?.upstreamRead(frame.payload)
    case .goAway(let lastStreamID, let code, _):
      goingAway = true
      for id in streams.keys where id > lastStreamID {
        remove(id)?.upstreamNeverBegan("the replica is going away (GOAWAY \(code)) and never began the call")
      }
    case .ping:
      context.fireChannelRead(data)  // the liveness handler's
    default:
      break  // SETTINGS, WINDOW_UPDATE: NIOHTTP2Handler's; RST_STREAM comes as StreamClosedEvent
    }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    // The per-stream events end here; the rest go on to the liveness handler.
    if case TLSUserEvent.handshakeCompleted = event {
      succeedActivation()  // after PeerIdentityHandler, which passes this on only for an allowed peer
      context.fireUserInboundEventTriggered(event)
    } else if let updated = event as? NIOHTTP2WindowUpdatedEvent {
      writer.returnConnectionWindow(after: updated)
    } else if let closed = event as? StreamClosedEvent {
      remove(closed.streamID)?.upstreamClosed(reason: closed.reason, failure: nil)
    } else if !(event is NIOHTTP2StreamCreatedEvent) {
      context.fireUserInboundEventTriggered(event)
    }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // A stream's error resets that stream (its call hears the code); anything else is the
    // connection's, which NIO closes.
    if !(error is NIOHTTP2Errors.StreamError) { failure = "\(error)" }
    context.fireErrorCaught(error)
  }

  func channelInactive(context: ChannelHandlerContext) {
    writer.detach()
    failActivation()
    for id in streams.keys {
      remove(id)?.upstreamClosed(reason: nil, failure: failure ?? "connection to the replica closed")
    }
    context.fireChannelInactive()
  }

  /// Forgets stream `id` and counts it closed; returns whom it reported to, if it was open.
  @discardableResult
  private func remove(_ id: HTTP2StreamID) -> (any UpstreamStreamDelegate)? {
    guard let delegate = streams.removeValue(forKey: id) else { return nil }
    liveness.streamClosed()
    return delegate
  }
}
