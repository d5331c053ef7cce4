import BinduHTTP2
import GRPCCore
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// A call's answer: the replica's frames back to the caller, and the call's end.
extension ProxyCall {
  // MARK: From the replica

  func upstreamRead(_ payload: HTTP2Frame.FramePayload) {
    guard case .forwarding(let endpoint, let stream) = state else { return }
    switch payload {
    case .headers(let headers):
      guard headers.endStream else {
        responseStarted = true
        request.keepNoMore()  // the replica has committed: no retry from here on
        reportKept()
        caller.write(payload, on: streamID)
        return
      }
      let status = GRPCHeaders.status(of: headers.headers)
      if let kind = rules.moveAfterStatus(status, responseStarted: responseStarted) {
        stream.cancel()
        moveOn(
          from: endpoint, kind: kind,
          reason: "\(endpoint.address) answered UNAVAILABLE: \(headers.headers.first(name: "grpc-message") ?? "")")
        return
      }
      judged = status == Status.Code.unavailable.rawValue
      endWithReplicaTrailers(payload, status: status ?? Status.Code.unknown.rawValue)
    case .data(let data):
      guard let count = withinLimit(data, response: true) else { return }
      if trace != nil { trace!.responseBytes += data.data.readableBytes }
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
    guard case .forwarding(let endpoint, _) = state,
      let kind = rules.moveAfterGoAway(responseStarted: responseStarted)
    else { return }
    moveOn(from: endpoint, kind: kind, reason: "\(endpoint.address): \(failure)", transparent: true)
  }

  func upstreamClosed(reason: HTTP2ErrorCode?, failure: String?) {
    guard case .forwarding(let endpoint, _) = state else { return }
    // The replica enforces the deadline it was given; when it gives up at (about) our deadline,
    // the caller's answer is DEADLINE_EXCEEDED, whichever timer fired first.
    if let deadline, deadline.replicaGaveUp(at: .now()) {
      deadlineReached()
      return
    }
    let why = failure ?? reason.map { "stream reset (\($0))" } ?? "connection closed"
    let failure = "\(endpoint.address): \(why)"
    if let kind = rules.moveAfterStreamEnded(reason: reason, responseStarted: responseStarted) {
      moveOn(from: endpoint, kind: kind, reason: failure)
      return
    }
    judged = true
    logger.warning("replica ended the call without a status", metadata: ["mesh.replica": "\(endpoint.address)", "error": "\(why)"])
    endWithStatus(.unavailable, "replica \(endpoint.address) of pool \"\(pool.name)\" failed: \(why)")
  }

  // MARK: Ending

  /// Follows message prefixes in a DATA frame and returns how many messages began in it; ends
  /// the call with `RESOURCE_EXHAUSTED` and returns `nil` when a message is over the limit.
  func withinLimit(_ data: HTTP2Frame.FramePayload.Data, response: Bool) -> Int? {
    guard case .byteBuffer(let buffer) = data.data else { return 0 }
    do {
      // The scanners are accessed only while scanning: `finish` reads them.
      return response ? try responseScanner.scan(buffer) : try requestScanner.scan(buffer)
    } catch {
      guard case .tooLarge(let length, let limit) = error else { return nil }
      let direction = response ? "response" : "request"
      endWithStatus(.resourceExhausted, "\(direction) message of \(length) bytes is larger than the limit of \(limit)")
      return nil
    }
  }

  /// Answers a `grpc.health.v1` Check from the pool's readiness.
  func answerHealth() {
    let (code, frames) = GRPCHealthAnswer.frames(for: localHealthBody ?? ByteBuffer(), pool: pool)
    localHealthBody = nil
    finish(code: code)  // before the last frame, which may close the stream
    for frame in frames { caller.write(frame, on: streamID) }
  }

  /// Closes the current attempt on a replica (its metrics, its endpoint's figures
  /// and its span; `movedOn`: why the call goes on to another replica).
  func closeAttempt(code: Int, movedOn reason: String? = nil) {
    trace?.endAttempt(code: code, movedOn: reason)
    let judged = self.judged
    self.judged = nil
    guard let metrics = attemptMetrics else {
      releasePicked()
      return
    }
    attemptMetrics = nil
    if attemptOpened { metrics.messagesSent.increment(by: requestScanner.messagesStarted) }
    let now = ContinuousClock.now
    metrics.finished(code: code, after: now - attemptStartedAt)
    guard let endpoint = picked else { return }
    picked = nil
    let ok = code == Status.Code.ok.rawValue
    pool.release(endpoint, attempt: .init(took: now - streamOpenedAt, ok: ok, failed: judged))
  }

  /// Gives back the current pick, which made no attempt (or whose attempt was closed).
  func releasePicked() {
    guard let endpoint = picked else { return }
    picked = nil
    pool.release(endpoint)
  }

  /// Passes the replica's trailers to the caller and ends the call (the time an OK answer took
  /// feeds the balancer's weight of the replica: ``PoolState/release(_:attempt:now:)``).
  func endWithReplicaTrailers(_ trailers: HTTP2Frame.FramePayload, status: Int) {
    closeAttempt(code: status)
    finish(code: status)
    caller.write(trailers, on: streamID)
  }

  /// Ends the call with the mesh's own status (`nil`: the caller is gone, nothing to send);
  /// `logged: false` for an end its connection has logged already.
  func endWithStatus(_ code: Status.Code?, _ message: String, logged: Bool = true) {
    if case .forwarding(_, let upstream) = state { upstream.cancel() }
    if case .queued(let ticket) = state { _ = pool.leaveQueue(ticket) }
    let status = (code ?? .cancelled).rawValue
    closeAttempt(code: status)
    finish(code: status, message: message)
    guard let code else { return }
    if logged { logger.info("call ended by the mesh", metadata: ["grpc.code": "\(code.canonicalName)", "reason": "\(message)"]) }
    let headers =
      responseStarted
      ? GRPCHeaders.trailers(code, message: message) : GRPCHeaders.trailersOnly(code, message: message)
    caller.write(.headers(.init(headers: headers, endStream: true)), on: streamID)
  }

  /// Finishes the call (its metrics and access log line) and lets go of what it holds: its
  /// replica, its place in the pool's counts, its kept request. The caller's answer is the
  /// caller's to write.
  func finish(code: Int, message: String? = nil) {
    if case .finished = state { return }
    trace?.ended(code: code, message: message, attempts: attempts)
    trace = nil
    let elapsed = ContinuousClock.now - startedAt
    serverMetrics?.finished(code: code, after: elapsed)
    if pool.accessLog {
      leftQueue()
      logger.info(
        "call",
        metadata: [
          "grpc.code": "\(Status.Code(rawValue: code)?.canonicalName ?? "\(code)")",
          "mesh.replica": "\(lastReplica.map { "\($0.address)" } ?? "none")",
          "mesh.attempts": "\(attempts)", "mesh.seconds": "\(elapsed.secondsValue)",
          "mesh.queue_seconds": "\(queueWaited.secondsValue)",
        ])
    }
    state = .finished
    releasePicked()
    deadlineTimer?.cancel()
    request.keepNoMore()
    reportKept()
    if counted { pool.endCall() }
    if holdsRetry { pool.endRetry() }
    counted = false
    holdsRetry = false
  }
}
