import NIOCore
import NIOHTTP2

/// Writes the frames of one HTTP/2 connection for the handler after `NIOHTTP2Handler` that
/// routes its streams (``CallerConnectionHandler``, ``UpstreamStreamsHandler``).
///
/// - Flushes once per event-loop tick: every call on a multiplexed connection wants its frames
///   sent, and a flush each would be a pass through the HTTP/2 handler and a `writev` each. The
///   flush runs when the tasks of the current tick run (`EventLoop.execute`), so the frames of
///   every call handled in that tick leave in one write, with no timer and no added latency at
///   one call at a time.
/// - Gives the peer back the connection's flow-control window once half of it is spent: the
///   mesh reads every frame as it arrives, so it is returned as soon as the HTTP/2 handler
///   reports it spent (``NIOHTTP2WindowUpdatedEvent``). Each stream's window comes back as its
///   data is written onwards (``ForwardingWindow``), so one slow stream holds back only itself.
final class FrameWriter {
  private static let connectionWindow = NIOHTTP2Handler.ConnectionConfiguration.meshWindowSize
  private var context: ChannelHandlerContext?
  private var flushPending = false

  /// Whether frames can be written: between ``attach(_:)`` and ``detach()``.
  var isAttached: Bool { context != nil }

  /// Writes through `context` from now on (the routing handler's, from `handlerAdded`).
  func attach(_ context: ChannelHandlerContext) {
    self.context = context
  }

  /// Writes nothing more (the connection closed or the handler left its pipeline).
  func detach() {
    context = nil
  }

  /// Writes `frame`, flushed once the current tick's work is done; `promise` completes once it
  /// is written, and fails when the connection is gone.
  func write(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>? = nil) {
    guard let context else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    context.write(NIOAny(frame), promise: promise)
    guard !flushPending else { return }
    flushPending = true
    let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    context.eventLoop.execute {
      let (writer, context) = bound.value
      writer.flushPending = false
      context.flush()
    }
  }

  /// Sends the connection's WINDOW_UPDATE when `event` shows half its window spent.
  func returnConnectionWindow(after event: NIOHTTP2WindowUpdatedEvent) {
    guard event.streamID == .rootStream, let size = event.inboundWindowSize, size <= Self.connectionWindow / 2 else {
      return
    }
    write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: Self.connectionWindow - size)))
  }
}
