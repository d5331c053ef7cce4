import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Forwards one call from the core to one replica of the pool, frame by frame.
///
/// The request's HEADERS pick a replica (round-robin) and open a stream on that replica's
/// connection from this event loop; frames that arrive before the stream is open are kept, so a
/// replica that cannot be reached is skipped for the next one (nothing was sent to it). The
/// response's HEADERS, DATA and trailers go back unchanged. `grpc-timeout` is rewritten with the
/// time left; at the deadline the caller gets `DEADLINE_EXCEEDED` and the replica's stream is
/// reset. Messages over the size limit end the call with `RESOURCE_EXHAUSTED`.
final class ProxyStreamHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  private enum State {
    /// Waiting for the request's HEADERS.
    case idle
    /// Opening a stream to `endpoint`; request frames are kept until it is open.
    case connecting(Endpoint)
    /// Frames flow both ways.
    case forwarding(Endpoint, any Channel)
    /// The caller has its answer (or went away).
    case finished
  }

  private let pool: ReplicaPool
  private let limits: MeshConfig.Upstream
  private var logger: Logger
  private var state = State.idle
  private var context: ChannelHandlerContext!
  private var pending: [HTTP2Frame.FramePayload] = []
  private var requestHeaders = HPACKHeaders()
  private var deadline: NIODeadline?
  private var deadlineTimer: Scheduled<Void>?
  private var tried: [Endpoint] = []
  private var lastFailure: String?
  private var responseStarted = false
  private var requestScanner: MessageFrameScanner
  private var responseScanner: MessageFrameScanner

  init(pool: ReplicaPool, limits: MeshConfig.Upstream, logger: Logger) {
    self.pool = pool
    self.limits = limits
    self.logger = logger
    self.requestScanner = MessageFrameScanner(limit: limits.maxMessageBytes)
    self.responseScanner = MessageFrameScanner(limit: limits.maxMessageBytes)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  // MARK: From the caller

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let payload = unwrapInboundIn(data)
    switch payload {
    case .headers(let headers):
      if case .idle = state {
        begin(headers)
      } else {
        forwardOrKeep(payload)  // request trailers: rare in gRPC, passed on as they are
      }
    case .data(let data):
      guard withinLimit(data, scanner: &requestScanner, direction: "request") else { return }
      forwardOrKeep(payload)
    default:
      break
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    // The caller reset the stream or the connection closed: end the replica's stream too.
    if case .finished = state { return }
    logger.debug("caller went away before the answer")
    finish(nil, "")
  }

  private func begin(_ headers: HTTP2Frame.FramePayload.Headers) {
    requestHeaders = headers.headers
    let path = requestHeaders.first(name: ":path") ?? ""
    logger[metadataKey: "rpc.method"] = "\(path)"
    if let timeout = requestHeaders.first(name: "grpc-timeout") {
      guard let nanos = GRPCTimeout.parse(Substring(timeout)) else {
        finish(.invalidArgument, "malformed grpc-timeout \"\(timeout)\"")
        return
      }
      let deadline = NIODeadline.now() + .nanoseconds(nanos)
      self.deadline = deadline
      deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
        deadlineTimer = nil
        finish(.deadlineExceeded, "deadline exceeded waiting for the replica of pool \"\(pool.name)\"")
      }
    }
    pending.append(.headers(headers))
    attempt()
  }

  /// Picks a replica not tried yet and opens a stream to it.
  private func attempt() {
    guard let endpoint = pool.pick(excluding: tried) else {
      if tried.isEmpty {
        finish(.unavailable, "no replica in pool \"\(pool.name)\"")
      } else {
        finish(.unavailable, "no replica of pool \"\(pool.name)\" could be reached (last: \(lastFailure ?? "unknown"))")
      }
      return
    }
    state = .connecting(endpoint)
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    endpoint.connection(on: context.eventLoop)
      .openStream { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(UpstreamStreamHandler(proxy: bound))
        }
      }
      .assumeIsolated()
      .whenComplete { [self] result in
        guard case .connecting(let current) = state, current === endpoint else {
          if case .success(let channel) = result { channel.close(promise: nil) }
          return
        }
        switch result {
        case .success(let channel):
          state = .forwarding(endpoint, channel)
          flushPending(to: channel)
        case .failure(let error):
          // Nothing was written to this replica: the call can safely go to another.
          tried.append(endpoint)
          lastFailure = "\(endpoint.address): \(error)"
          logger.warning(
            "replica unreachable, trying the next",
            metadata: ["mesh.replica": "\(endpoint.address)", "error": "\(error)"])
          attempt()
        }
      }
  }

  private func flushPending(to channel: any Channel) {
    for var payload in pending {
      if case .headers(var headers) = payload, headers.headers.first(name: ":path") != nil {
        headers.headers = upstreamHeaders()
        payload = .headers(headers)
      }
      channel.write(payload, promise: nil)
    }
    pending.removeAll()
    channel.flush()
  }

  /// The request headers with `grpc-timeout` set to the time left.
  private func upstreamHeaders() -> HPACKHeaders {
    guard let deadline else { return requestHeaders }
    var headers = requestHeaders
    let left = max((deadline - .now()).nanoseconds, 1)
    headers.replaceOrAdd(name: "grpc-timeout", value: GRPCTimeout.format(nanoseconds: left))
    return headers
  }

  private func forwardOrKeep(_ payload: HTTP2Frame.FramePayload) {
    switch state {
    case .connecting, .idle:
      pending.append(payload)
    case .forwarding(_, let channel):
      channel.writeAndFlush(payload, promise: nil)
    case .finished:
      break
    }
  }

  // MARK: From the replica

  func upstreamRead(_ payload: HTTP2Frame.FramePayload) {
    guard case .forwarding = state else { return }
    switch payload {
    case .headers(let headers):
      if headers.endStream {
        complete(with: payload)
        return
      }
      responseStarted = true
      context.write(wrapOutboundOut(payload), promise: nil)
    case .data(let data):
      guard withinLimit(data, scanner: &responseScanner, direction: "response") else { return }
      context.write(wrapOutboundOut(payload), promise: nil)
    default:
      break
    }
  }

  func upstreamReadComplete() {
    if case .forwarding = state { context.flush() }
  }

  func upstreamFailed(_ error: any Error) {
    lastFailure = "\(error)"
  }

  func upstreamClosed(reason: HTTP2ErrorCode?) {
    guard case .forwarding(let endpoint, _) = state else { return }
    let why = reason.map { "stream reset (\($0))" } ?? lastFailure ?? "connection closed"
    logger.warning(
      "replica ended the call without a status", metadata: ["mesh.replica": "\(endpoint.address)", "error": "\(why)"])
    finish(.unavailable, "replica \(endpoint.address) of pool \"\(pool.name)\" failed: \(why)")
  }

  /// Follows message prefixes in a DATA frame; ends the call with `RESOURCE_EXHAUSTED` and
  /// returns `false` when a message is over the limit.
  private func withinLimit(
    _ data: HTTP2Frame.FramePayload.Data, scanner: inout MessageFrameScanner, direction: String
  ) -> Bool {
    guard case .byteBuffer(let buffer) = data.data else { return true }
    do {
      _ = try scanner.scan(buffer)
      return true
    } catch {
      guard case .tooLarge(let length, let limit) = error else { return false }
      finish(.resourceExhausted, "\(direction) message of \(length) bytes is larger than the limit of \(limit)")
      return false
    }
  }

  // MARK: Ending

  /// Passes the replica's trailers to the caller and ends the call.
  private func complete(with trailers: HTTP2Frame.FramePayload) {
    state = .finished
    deadlineTimer?.cancel()
    context.writeAndFlush(wrapOutboundOut(trailers), promise: nil)
  }

  /// Ends the call with the mesh's own status (`nil`: the caller is gone, nothing to send).
  private func finish(_ code: GRPCStatusCode?, _ message: String) {
    let previous = state
    state = .finished
    deadlineTimer?.cancel()
    pending.removeAll()
    if case .forwarding(_, let upstream) = previous { upstream.close(promise: nil) }
    guard let code else { return }
    if code != .ok { logger.info("call ended by the mesh", metadata: ["grpc.code": "\(code.name)", "reason": "\(message)"]) }
    let headers =
      responseStarted
      ? GRPCHeaders.trailers(code, message: message) : GRPCHeaders.trailersOnly(code, message: message)
    context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
  }
}
