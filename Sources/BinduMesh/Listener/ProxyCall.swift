import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Forwards one call from the core to one replica of the pool, frame by frame.
///
/// The caller's connection (``CallerConnectionHandler``) hands the call its stream's frames.
/// Once the request's first message is whole, the call picks a replica (the pool's balancer, over the healthy ones; with
/// `balancer.max_concurrent_calls`, the call may first wait in the pool's queue until its
/// deadline) and open a stream on that replica's connection from this event loop. The request frames are kept until the
/// replica commits to an answer (its response HEADERS), so a call that cannot have reached the
/// handler — no connection, a stream refused by the replica, a stream after the last one its
/// GOAWAY names (without spending retry budget), or (when the pool says so) `UNAVAILABLE` before
/// any response — moves to another replica, at most `retry.max_attempts` times and within the
/// pool's retry budget. A call that may have run is never replayed unless
/// `retry.replay_started_calls`. The response's HEADERS, DATA and trailers go back unchanged.
/// `grpc-timeout` is rewritten with the time left; at the deadline the caller gets
/// `DEADLINE_EXCEEDED` and the replica's stream is reset. Messages over the size limit end the
/// call with `RESOURCE_EXHAUSTED`. Every attempt's outcome feeds the pool's outlier detection.
/// Each direction's stream window goes back to its sender as the data is written onwards
/// (``ForwardingWindow``), so a slow reader holds back its writer, not the mesh's memory.
final class ProxyCall: UpstreamStreamDelegate {
  private enum State {
    /// Waiting for the request's HEADERS.
    case idle
    /// Reading the request until its first message is whole (or the request ends, or fills what
    /// a call keeps) before a replica is picked: a caller that sends HEADERS and nothing more
    /// holds no replica's stream.
    case reading
    /// Every replica is at its limit: waiting in the pool's queue under `ticket`.
    case queued(ticket: UInt64)
    /// Opening a stream to `endpoint`.
    case connecting(Endpoint)
    /// Frames flow both ways.
    case forwarding(Endpoint, UpstreamStream)
    /// The caller has its answer (or went away).
    case finished
  }

  /// The caller's connection, and the call's stream on it.
  private let caller: CallerConnectionHandler
  private let streamID: HTTP2StreamID
  private let eventLoop: any EventLoop

  private let pool: ReplicaPool
  private let limits: MeshConfig.Upstream
  private let poolLogger: Logger
  /// The pool's logger with the call's method: made only when a line is logged.
  private var logger: Logger { poolLogger.with("rpc.method", path) }
  private var state = State.idle
  /// The request's frames so far, kept until the replica commits so the call can move.
  private var request: KeptRequest
  /// Window the caller is owed for request bytes held back while the call waited for a replica
  /// with ``KeptRequest/isFull``; given back once a replica has them.
  private var heldWindow = 0
  /// The flow-control windows of the caller's stream (request) and the replica's (response).
  private var requestWindow = ForwardingWindow()
  private var responseWindow = ForwardingWindow()
  private var requestHeaders = HPACKHeaders()
  /// The call's `:path`, such as `/bindu.grpc.AgentHandler/HandleMessages`.
  private var path = ""
  private var deadline: NIODeadline?
  private var deadlineTimer: Scheduled<Void>?
  /// The deadline of a call that came without one (`upstream.default_call_timeout`).
  private var defaultDeadline: NIODeadline?
  private var tried: [Endpoint] = []
  /// The endpoint the current attempt counts on (``ReplicaPool/release(_:)`` when it ends).
  private var picked: Endpoint?
  private var responseStarted = false
  private var counted = false
  private var holdsRetry = false
  private var requestScanner: MessageFrameScanner
  private var responseScanner: MessageFrameScanner
  /// Metrics of the call the core made, and when it began.
  private var serverMetrics: GRPCCallMetrics?
  private var startedAt: ContinuousClock.Instant
  /// Metrics of the current attempt on a replica, and when it began.
  private var attemptMetrics: GRPCCallMetrics?
  private var attemptStartedAt: ContinuousClock.Instant
  private var attemptOpened = false
  /// Request bytes this call keeps, as last told to its connection (``reportKept()``).
  private var keptReported = 0
  /// The body of a `grpc.health.v1` Check the mesh answers itself.
  private var localHealthBody: ByteBuffer?
  /// The pool's retry policy when the call began (a reload changes it for later calls).
  private let retry: MeshConfig.Retry

  init(
    caller: CallerConnectionHandler, streamID: HTTP2StreamID, eventLoop: any EventLoop, pool: ReplicaPool,
    limits: MeshConfig.Upstream, retry: MeshConfig.Retry, logger: Logger
  ) {
    self.caller = caller
    self.streamID = streamID
    self.eventLoop = eventLoop
    self.pool = pool
    self.limits = limits
    self.poolLogger = logger
    self.retry = retry
    self.request = KeptRequest(limit: retry.maxKeptRequestBytes)
    self.requestScanner = MessageFrameScanner(limit: limits.maxMessageBytes)
    self.responseScanner = MessageFrameScanner(limit: limits.maxMessageBytes)
    self.startedAt = .now  // the call begins with the HEADERS that made it
    self.attemptStartedAt = startedAt
  }

  // MARK: From the caller

  /// A frame of the caller's stream.
  func received(_ payload: HTTP2Frame.FramePayload) {
    switch payload {
    case .headers(let headers):
      if localHealthBody != nil {
        if headers.endStream { answerHealth() }  // a health Check's trailers: its request is whole
      } else if case .idle = state {
        begin(headers)
      } else {
        forward(payload)  // request trailers: rare in gRPC, passed on as they are
        if headers.endStream { requestReadEnough() }
      }
    case .data(let data):
      if case .finished = state { return }  // answered already: the rest of the request is dropped
      if localHealthBody != nil {
        if case .byteBuffer(var buffer) = data.data { localHealthBody!.writeBuffer(&buffer) }
        if data.endStream { answerHealth() }
        return
      }
      guard let count = withinLimit(data, response: false) else { return }
      serverMetrics?.messagesReceived.increment(by: count)
      forward(payload, windowBack: requestWindow.received(data))
      if data.endStream || requestScanner.messagesEnded > 0 || requestFull { requestReadEnough() }
    default:
      break
    }
  }

  /// The caller's stream closed (reset, or its connection closed).
  func callerClosed() {
    // The caller reset the stream or the connection closed: end the replica's stream too.
    if case .finished = state { return }
    logger.debug("caller went away before the answer")
    finish(nil, "")
  }

  private func begin(_ headers: HTTP2Frame.FramePayload.Headers) {
    requestHeaders = headers.headers
    path = requestHeaders.first(name: ":path") ?? ""
    serverMetrics = caller.serverMetrics(path: path)
    serverMetrics?.started.increment()
    if path == GRPCHealthAnswer.checkPath {
      localHealthBody = ByteBuffer()
      if headers.endStream { answerHealth() }
      return
    }
    if path == GRPCHealthAnswer.watchPath {
      finish(.unimplemented, "grpc.health.v1.Health/Watch is not offered: use Check")
      return
    }
    pool.beginCall()
    counted = true
    if let given = requestHeaders.first(name: "grpc-timeout") {
      guard let nanos = GRPCTimeout.parse(Substring(given)) else {
        finish(.invalidArgument, "malformed grpc-timeout \"\(given)\"")
        return
      }
      let deadline = NIODeadline.now() + .nanoseconds(nanos)
      self.deadline = deadline
      deadlineTimer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
        deadlineTimer = nil
        deadlineReached()
      }
    } else if let timeout = limits.defaultCallTimeout {
      // A call without grpc-timeout gets `upstream.default_call_timeout`, so that none holds a
      // stream (and a replica's) for ever; its connection checks it every second
      // (``CallerConnectionHandler``), which costs the call no timer of its own.
      defaultDeadline = .now() + timeout.timeAmount
    }
    request.keep(.headers(headers), sent: false)
    state = .reading
    if headers.endStream { requestReadEnough() }
  }

  /// The request's first message is whole, or the request ended, or it fills what a call keeps:
  /// time to pick a replica.
  private func requestReadEnough() {
    guard case .reading = state else { return }
    attempt(retrying: nil)
  }

  /// Picks a replica not tried yet and opens a stream to it; `retrying` says why when this is
  /// not the first attempt. A `transparent` retry (the replica's GOAWAY says it never began the
  /// call) takes nothing from the retry budget.
  private func attempt(retrying reason: String?, transparent: Bool = false) {
    if let reason {
      guard tried.count < retry.maxAttempts else {
        finish(.unavailable, "pool \"\(pool.name)\": gave up after \(tried.count) attempts (last: \(reason))")
        return
      }
      if !holdsRetry && !transparent {
        guard pool.beginRetry() else {
          finish(.unavailable, "pool \"\(pool.name)\": retry budget spent (last: \(reason))")
          return
        }
        holdsRetry = true
      }
    }
    // The waiter is made only when the call has to queue (a non-escaping closure: no allocation).
    let pick = pool.pick(excluding: tried) { [self] in
      let bound = NIOLoopBound(self, eventLoop: eventLoop)
      return ReplicaPool.QueuedCall { [eventLoop] endpoint in
        eventLoop.execute { bound.value.leftQueue(with: endpoint, retrying: reason) }
      }
    }
    switch pick {
    case .endpoint(let chosen):
      use(chosen, retrying: reason)
    case .queued(let ticket):
      state = .queued(ticket: ticket)
    case .queueFull(let why):
      finish(.resourceExhausted, why)
    case .none(let why):
      finish(.unavailable, reason.map { "\(why); last failure: \($0)" } ?? why)
    }
  }

  /// The pool's queue gave this call `endpoint`.
  private func leftQueue(with endpoint: Endpoint, retrying reason: String?) {
    guard case .queued = state else {
      pool.release(endpoint)  // the call ended while its slot was on its way
      return
    }
    use(endpoint, retrying: reason)
  }

  /// Opens a stream to `endpoint`, which the pool picked for this attempt.
  private func use(_ endpoint: Endpoint, retrying reason: String?) {
    picked = endpoint
    if let reason {
      logger.notice("retrying the call on another replica", metadata: ["mesh.replica": "\(endpoint)", "reason": "\(reason)"])
    }
    let connection = endpoint.connection(on: eventLoop)
    attemptMetrics = connection.clientMetrics(path: path) { endpoint.clientMetrics(pool: pool, path: $0) }
    attemptMetrics?.started.increment()
    attemptStartedAt = .now  // a replica's time excludes reading the request and waiting in the queue
    attemptOpened = false
    state = .connecting(endpoint)
    if let stream = connection.openStream(self) {
      opened(stream, on: endpoint)
      return
    }
    connection.openStreamAfterConnecting(self) { [self] result in
      guard case .connecting(let current) = state, current === endpoint else {
        if case .success(let stream) = result { stream.cancel() }  // the call has moved on or ended
        return
      }
      switch result {
      case .success(let stream):
        opened(stream, on: endpoint)
      case .failure(let error):
        // Nothing was written to this replica: the call can safely go to another.
        moveOn(from: endpoint, kind: .connectFailed, reason: "\(endpoint.address): cannot connect: \(error)")
      }
    }
  }

  private func opened(_ stream: UpstreamStream, on endpoint: Endpoint) {
    state = .forwarding(endpoint, stream)
    attemptOpened = true
    sendRequest(to: stream)
  }

  /// Counts a failed attempt on `endpoint` and tries the next replica; `kind` labels the retry.
  /// A `transparent` move (`goaway`) is not the replica's failure and spends no retry budget.
  private func moveOn(
    from endpoint: Endpoint, kind: ReplicaPool.RetryReason, reason: String, transparent: Bool = false
  ) {
    endAttempt(code: GRPCStatusCode.unavailable.rawValue)
    if !transparent { pool.record(endpoint, failed: true) }
    guard request.canMove else {
      finish(
        .unavailable,
        "pool \"\(pool.name)\": not moved to another replica: its request (\(request.bytes) bytes) was not kept, "
          + "over retry.max_kept_request_bytes or callbacks.max_buffered_bytes (last: \(reason))")
      return
    }
    pool.countRetry(reason: kind)
    tried.append(endpoint)
    attempt(retrying: reason, transparent: transparent)
  }

  private func sendRequest(to stream: UpstreamStream) {
    guard var headers = request.headers else { return }
    headers.headers = upstreamHeaders()
    stream.write(.headers(headers))
    request.forEachFrameAfterHeaders { stream.write($0) }
    request.sent(dropAll: caller.keepsTooMuch)
    reportKept()
    if heldWindow > 0 {
      giveWindow(heldWindow)
      heldWindow = 0
    }
  }

  /// The request headers with `grpc-timeout` set to the time left.
  private func upstreamHeaders() -> HPACKHeaders {
    guard let deadline else { return requestHeaders }
    var headers = requestHeaders
    let left = max((deadline - .now()).nanoseconds, 1)
    headers.replaceOrAdd(name: "grpc-timeout", value: GRPCTimeout.format(nanoseconds: left))
    return headers
  }

  /// Sends a request frame to the replica (keeping it until the replica commits); `windowBack`
  /// bytes of window go back to the caller once it is written.
  private func forward(_ payload: HTTP2Frame.FramePayload, windowBack: Int? = nil) {
    guard case .forwarding(_, let stream) = state else {
      // Kept until a replica's stream opens; past retry.max_kept_request_bytes, the caller's
      // window waits for that too, so a call waiting for a replica holds at most that much.
      if !responseStarted {
        request.keep(payload, sent: false)
        reportKept()
      }
      if let windowBack {
        if requestFull { heldWindow += windowBack } else { giveWindow(windowBack) }
      }
      return
    }
    if !responseStarted {
      request.keep(payload, sent: true, dropAll: caller.keepsTooMuch)
      reportKept()
    }
    guard let windowBack else {
      stream.write(payload)
      return
    }
    let written = eventLoop.makePromise(of: Void.self)
    stream.write(payload, promise: written)
    written.futureResult.assumeIsolated().whenComplete { [self] _ in giveWindow(windowBack) }
  }

  /// Whether the call should take no more of its request until a replica has it: it keeps
  /// `retry.max_kept_request_bytes`, or its connection's calls keep `callbacks.max_buffered_bytes`.
  private var requestFull: Bool { request.isFull || caller.keepsTooMuch }

  /// Tells the connection how many request bytes this call keeps now.
  private func reportKept() {
    let retained = request.retained
    guard retained != keptReported else { return }
    caller.keptChanged(by: retained - keptReported)
    keptReported = retained
  }

  /// Gives the caller `bytes` of its stream's window back.
  private func giveWindow(_ bytes: Int) {
    caller.write(.windowUpdate(windowSizeIncrement: bytes), on: streamID)
  }

  /// Ends the call if it came without a deadline and has run past the default one.
  func checkDefaultDeadline(now: NIODeadline) {
    guard let defaultDeadline, now >= defaultDeadline else { return }
    if case .finished = state { return }
    self.defaultDeadline = nil
    deadlineReached()
  }

  private func deadlineReached() {
    if case .forwarding(let endpoint, _) = state { pool.record(endpoint, failed: true) }
    let replica: String
    switch state {
    case .forwarding(let endpoint, _), .connecting(let endpoint): replica = "replica \(endpoint.address) of "
    case .queued: replica = "a free replica in the queue of "
    default: replica = "a replica of "
    }
    finish(.deadlineExceeded, "deadline exceeded waiting for \(replica)pool \"\(pool.name)\"")
  }

  // MARK: From the replica

  func upstreamRead(_ payload: HTTP2Frame.FramePayload) {
    guard case .forwarding(let endpoint, let stream) = state else { return }
    switch payload {
    case .headers(let headers):
      guard headers.endStream else {
        responseStarted = true
        request.removeAll()  // the replica has committed: no retry from here on
        reportKept()
        caller.write(payload, on: streamID)
        return
      }
      let status = GRPCHeaders.status(of: headers.headers)
      if !responseStarted && status == GRPCStatusCode.unavailable.rawValue && retry.onUnavailable {
        stream.cancel()
        moveOn(
          from: endpoint, kind: .unavailable,
          reason: "\(endpoint.address) answered UNAVAILABLE: \(headers.headers.first(name: "grpc-message") ?? "")")
        return
      }
      pool.record(endpoint, failed: status == GRPCStatusCode.unavailable.rawValue)
      complete(with: payload, status: status ?? GRPCStatusCode.unknown.rawValue)
    case .data(let data):
      guard let count = withinLimit(data, response: true) else { return }
      serverMetrics?.messagesSent.increment(by: count)
      attemptMetrics?.messagesReceived.increment(by: count)
      guard let windowBack = responseWindow.received(data) else {
        caller.write(payload, on: streamID)
        return
      }
      // The replica gets its window back once the caller's connection has taken the data.
      let written = eventLoop.makePromise(of: Void.self)
      caller.write(payload, on: streamID, promise: written)
      written.futureResult.assumeIsolated().whenSuccess {
        stream.write(.windowUpdate(windowSizeIncrement: windowBack))
      }
    default:
      break
    }
  }

  func upstreamNeverBegan(_ failure: String) {
    guard case .forwarding(let endpoint, _) = state, !responseStarted else { return }
    moveOn(from: endpoint, kind: .goaway, reason: "\(endpoint.address): \(failure)", transparent: true)
  }

  func upstreamClosed(reason: HTTP2ErrorCode?, failure: String?) {
    guard case .forwarding(let endpoint, _) = state else { return }
    // The replica enforces the deadline it was given; when it gives up at (about) our deadline,
    // the caller's answer is DEADLINE_EXCEEDED, whichever timer fired first.
    if let deadline, NIODeadline.now() + .milliseconds(50) >= deadline {
      deadlineReached()
      return
    }
    let why = failure ?? reason.map { "stream reset (\($0))" } ?? "connection closed"
    let failure = "\(endpoint.address): \(why)"
    // REFUSED_STREAM guarantees the replica did not process the call (RFC 9113 §8.7).
    if !responseStarted && (reason == .refusedStream || retry.replayStartedCalls) {
      moveOn(from: endpoint, kind: reason == .refusedStream ? .refusedStream : .replay, reason: failure)
      return
    }
    pool.record(endpoint, failed: true)
    logger.warning("replica ended the call without a status", metadata: ["mesh.replica": "\(endpoint.address)", "error": "\(why)"])
    finish(.unavailable, "replica \(endpoint.address) of pool \"\(pool.name)\" failed: \(why)")
  }

  // MARK: Ending

  /// Follows message prefixes in a DATA frame and returns how many messages began in it; ends
  /// the call with `RESOURCE_EXHAUSTED` and returns `nil` when a message is over the limit.
  private func withinLimit(_ data: HTTP2Frame.FramePayload.Data, response: Bool) -> Int? {
    guard case .byteBuffer(let buffer) = data.data else { return 0 }
    do {
      // The scanners are accessed only while scanning: `finish` reads them.
      return response ? try responseScanner.scan(buffer) : try requestScanner.scan(buffer)
    } catch {
      guard case .tooLarge(let length, let limit) = error else { return nil }
      let direction = response ? "response" : "request"
      finish(.resourceExhausted, "\(direction) message of \(length) bytes is larger than the limit of \(limit)")
      return nil
    }
  }

  /// Answers a `grpc.health.v1` Check from the pool's readiness.
  private func answerHealth() {
    let (code, frames) = GRPCHealthAnswer.frames(for: localHealthBody ?? ByteBuffer(), pool: pool)
    localHealthBody = nil
    end(code: code)  // before the last frame, which may close the stream
    for frame in frames { caller.write(frame, on: streamID) }
  }

  /// Records the end of the current attempt on a replica (its metrics, and its endpoint's figures).
  private func endAttempt(code: Int) {
    let endpoint = picked
    releasePicked()
    guard let metrics = attemptMetrics else { return }
    attemptMetrics = nil
    if attemptOpened { metrics.messagesSent.increment(by: requestScanner.messagesStarted) }
    let now = ContinuousClock.now
    let took = now - attemptStartedAt
    metrics.finished(code: code, after: took)
    endpoint?.recordAttempt(took: took, endedAt: now, ok: code == GRPCStatusCode.ok.rawValue)
  }

  private func releasePicked() {
    guard let endpoint = picked else { return }
    picked = nil
    pool.release(endpoint)
  }

  /// Passes the replica's trailers to the caller and ends the call (the time an OK answer took
  /// feeds the balancer's weight of the replica: ``Endpoint/recordAttempt(took:endedAt:ok:)``).
  private func complete(with trailers: HTTP2Frame.FramePayload, status: Int) {
    endAttempt(code: status)
    end(code: status)
    caller.write(trailers, on: streamID)
  }

  /// Ends the call with the mesh's own status (`nil`: the caller is gone, nothing to send).
  private func finish(_ code: GRPCStatusCode?, _ message: String) {
    if case .forwarding(_, let upstream) = state { upstream.cancel() }
    if case .queued(let ticket) = state { _ = pool.leaveQueue(ticket) }
    let status = (code ?? .cancelled).rawValue
    endAttempt(code: status)
    end(code: status)
    guard let code else { return }
    logger.info("call ended by the mesh", metadata: ["grpc.code": "\(code.name)", "reason": "\(message)"])
    let headers =
      responseStarted
      ? GRPCHeaders.trailers(code, message: message) : GRPCHeaders.trailersOnly(code, message: message)
    caller.write(.headers(.init(headers: headers, endStream: true)), on: streamID)
  }

  private func end(code: Int) {
    if case .finished = state { return }
    let elapsed = ContinuousClock.now - startedAt
    serverMetrics?.finished(code: code, after: elapsed)
    if pool.accessLog {
      logger.info(
        "call",
        metadata: [
          "grpc.code": "\(GRPCStatusCode(rawValue: code)?.name ?? "\(code)")",
          "mesh.attempts": "\(tried.count + 1)", "mesh.seconds": "\(elapsed.secondsValue)",
        ])
    }
    state = .finished
    releasePicked()
    deadlineTimer?.cancel()
    request.removeAll()
    reportKept()
    if counted { pool.endCall() }
    if holdsRetry { pool.endRetry() }
    counted = false
    holdsRetry = false
  }
}
