import NIOCore
import NIOHTTP2

/// Closes a caller's connection once it is draining and its last call has ended.
///
/// Sits after `NIOHTTP2Handler`, which answers ``ChannelShouldQuiesceEvent`` with GOAWAY but
/// leaves an idle connection open for the client to close (the core's grpcio does not). The
/// listener's stream initializer reports each stream with ``streamOpened(_:)``. Calls still open
/// when `grace` runs out are cut.
final class ConnectionDrainHandler: ChannelInboundHandler {
  typealias InboundIn = Never

  private let grace: TimeAmount
  private var openStreams = 0
  private var draining = false
  private var context: ChannelHandlerContext?

  init(grace: Duration) {
    self.grace = grace.timeAmount
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
  }

  /// Counts a stream of this connection until its channel closes.
  func streamOpened(_ stream: any Channel) {
    openStreams += 1
    let bound = NIOLoopBound(self, eventLoop: stream.eventLoop)
    stream.closeFuture.whenComplete { _ in bound.value.streamClosed() }
  }

  private func streamClosed() {
    openStreams -= 1
    if draining && openStreams == 0 { context?.close(promise: nil) }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    switch event {
    case is ChannelShouldQuiesceEvent:
      draining = true
      if openStreams == 0 {
        context.close(promise: nil)
      } else {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: grace) { loopBound.value.close(promise: nil) }
      }
    default:
      break
    }
    context.fireUserInboundEventTriggered(event)
  }
}
