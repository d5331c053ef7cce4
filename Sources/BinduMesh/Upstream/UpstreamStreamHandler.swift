import NIOCore
import NIOHTTP2

/// The pipeline of one stream to a replica: hands every response frame, and the stream's end,
/// to the ``ProxyStreamHandler`` of the core's call. Both run on the same event loop.
final class UpstreamStreamHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame.FramePayload

  private let proxy: NIOLoopBound<ProxyStreamHandler>
  private var closeReason: HTTP2ErrorCode?

  init(proxy: NIOLoopBound<ProxyStreamHandler>) {
    self.proxy = proxy
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    proxy.value.upstreamRead(unwrapInboundIn(data), from: context.channel)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    proxy.value.upstreamReadComplete(from: context.channel)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let closed = event as? StreamClosedEvent { closeReason = closed.reason }
    context.fireUserInboundEventTriggered(event)
  }

  func channelInactive(context: ChannelHandlerContext) {
    proxy.value.upstreamClosed(reason: closeReason, from: context.channel)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    proxy.value.upstreamFailed(error, from: context.channel)
    context.close(promise: nil)
  }
}
