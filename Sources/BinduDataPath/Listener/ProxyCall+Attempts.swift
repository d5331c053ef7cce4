import BinduHTTP2
import GRPCCore
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// A call's attempts: picking a replica, opening a stream to it, sending the request kept so
/// far and forwarding the rest, and moving to another replica when the call cannot have reached
/// the handler.
extension ProxyCall {
  /// The request's first message is whole, or the request ended, or it fills what a call keeps:
  /// time to pick a replica.
  func requestReadEnough() {
    guard case .reading = state else { return }
    attempt(retrying: nil)
  }

  /// Picks a replica not tried yet and opens a stream to it; `retrying` says why when this is
  /// not the first attempt. A `transparent` retry (the replica's GOAWAY says it never began the
  /// call) takes nothing from the retry budget.
  func attempt(retrying reason: String?, transparent: Bool = false) {
    if let reason {
      guard rules.mayTryAnother(after: tried.count) else {
        endWithStatus(.unavailable, "pool \"\(pool.name)\": gave up after \(tried.count) attempts (last: \(reason))")
        return
      }
      if !holdsRetry && !transparent {
        guard pool.beginRetry() else {
          endWithStatus(.unavailable, "pool \"\(pool.name)\": retry budget spent (last: \(reason))")
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
      queuedAt = .now
      trace?.queued()
    case .queueFull(let why):
      endWithStatus(.resourceExhausted, why)
    case .none(let why):
      endWithStatus(.unavailable, reason.map { "\(why); last failure: \($0)" } ?? why)
    }
  }

  /// The pool's queue gave this call `endpoint`.
  func leftQueue(with endpoint: Endpoint, retrying reason: String?) {
    leftQueue()
    guard case .queued = state else {
      pool.release(endpoint)  // the call ended while its slot was on its way
      return
    }
    use(endpoint, retrying: reason)
  }

  /// Adds the time since the call was queued to its queue wait.
  func leftQueue() {
    guard let queuedAt else { return }
    let waited = ContinuousClock.now - queuedAt
    queueWaited += waited
    trace?.leftQueue(waited: waited)
    self.queuedAt = nil
  }

  /// Opens a stream to `endpoint`, which the pool picked for this attempt.
  func use(_ endpoint: Endpoint, retrying reason: String?) {
    picked = endpoint
    lastReplica = endpoint
    attempts += 1
    trace?.attemptBegan(replica: endpoint.address, number: attempts, retrying: reason)
    if let reason {
      logger.notice("retrying the call on another replica", metadata: ["mesh.replica": "\(endpoint)", "reason": "\(reason)"])
    }
    let connection = endpoint.connection(on: eventLoop)
    attemptMetrics = connection.clientMetrics(path: path) { endpoint.clientMetrics(pool: pool, path: $0) }
    attemptMetrics?.started.increment()
    attemptStartedAt = .now  // a replica's time excludes reading the request and waiting in the queue
    streamOpenedAt = attemptStartedAt
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
        streamOpenedAt = .now
        opened(stream, on: endpoint)
      case .failure(let error):
        // Nothing was written to this replica: the call can safely go to another.
        moveOn(from: endpoint, kind: .connectFailed, reason: "\(endpoint.address): cannot connect: \(error)")
      }
    }
  }

  func opened(_ stream: UpstreamStream, on endpoint: Endpoint) {
    state = .forwarding(endpoint, stream)
    attemptOpened = true
    sendRequest(to: stream)
  }

  /// Counts a failed attempt on `endpoint` and tries the next replica; `kind` labels the retry.
  /// A `transparent` move (`goaway`) is not the replica's failure and spends no retry budget.
  func moveOn(
    from endpoint: Endpoint, kind: ReplicaPool.RetryReason, reason: String, transparent: Bool = false
  ) {
    judged = transparent ? nil : true
    closeAttempt(code: Status.Code.unavailable.rawValue, movedOn: reason)
    guard request.canMove else {
      endWithStatus(
        .unavailable,
        "pool \"\(pool.name)\": not moved to another replica: its request (\(request.bytes) bytes) was not kept, "
          + "over retry.max_kept_request_bytes or callbacks.max_buffered_bytes (last: \(reason))")
      return
    }
    pool.countRetry(reason: kind)
    tried.append(endpoint)
    attempt(retrying: reason, transparent: transparent)
  }

  func sendRequest(to stream: UpstreamStream) {
    guard var headers = request.headers, case .forwarding(let endpoint, _) = state else { return }
    headers.headers = upstreamHeaders()
    // Headers the replica would refuse are never sent: its stack may close the whole connection
    // (every other call on it) over them.
    let announced = stream.peerMaxHeaderListSize ?? .max
    let limit = min(announced, limits.maxHeaderListSize)
    let size = HeaderListSize.of(headers.headers)
    guard size <= limit else {
      endWithStatus(
        .resourceExhausted,
        "request headers of \(size) bytes are over the \(limit) bytes replica \(endpoint.address) takes "
          + (announced < limits.maxHeaderListSize ? "(its SETTINGS_MAX_HEADER_LIST_SIZE)" : "(upstream.max_header_list_size)"))
      return
    }
    stream.write(.headers(headers))
    // The window held back while the call waited goes back once the frames are written to the
    // replica (the last one's promise: a stream writes in order), not when they are queued.
    let held = heldWindow
    heldWindow = 0
    var last: HTTP2Frame.FramePayload?
    request.forEachFrameAfterHeaders { frame in
      if let previous = last { stream.write(previous) }
      last = frame
    }
    if let last, held > 0 {
      let written = eventLoop.makePromise(of: Void.self)
      stream.write(last, promise: written)
      written.futureResult.assumeIsolated().whenComplete { [self] _ in giveWindow(held) }
    } else if let last {
      stream.write(last)
    } else if held > 0 {
      giveWindow(held)
    }
    // Past the per-call limit the kept frames are dropped; within it they stay counted against
    // the connection's budget, even a full one: frames queued for the replica's window are
    // still in memory.
    request.replicaHasAll()
    reportKept()
  }

  /// The request headers with `grpc-timeout` set to the time left and, when tracing is on, the
  /// attempt's `traceparent`.
  func upstreamHeaders() -> HPACKHeaders {
    guard deadline?.isPassedOn == true || trace != nil else { return requestHeaders }
    var headers = requestHeaders
    if let timeout = deadline?.grpcTimeout(at: .now()) { headers.replaceOrAdd(name: "grpc-timeout", value: timeout) }
    trace?.inject(into: &headers)
    return headers
  }

  /// Sends a request frame to the replica (keeping it until the replica commits); `windowBack`
  /// bytes of window go back to the caller once it is written.
  func forward(_ payload: HTTP2Frame.FramePayload, windowBack: Int? = nil) {
    guard case .forwarding(_, let stream) = state else {
      // Kept until a replica's stream opens, and the caller's window with it: what a call
      // waiting for a replica holds counts against its connection's callbacks.max_buffered_bytes
      // until it is written to the replica (``requestFull`` makes it pick one before the caller
      // runs out of window).
      request.waiting(payload)
      reportKept()
      if let windowBack { heldWindow += windowBack }
      return
    }
    request.forwarded(payload, connectionOverBudget: caller.keepsTooMuch)
    reportKept()
    guard let windowBack else {
      stream.write(payload)
      return
    }
    let written = eventLoop.makePromise(of: Void.self)
    stream.write(payload, promise: written)
    written.futureResult.assumeIsolated().whenComplete { [self] _ in giveWindow(windowBack) }
  }

  /// Whether the call should pick its replica now rather than wait for its first message to be
  /// whole: it keeps `retry.max_kept_request_bytes`, or its connection's calls keep
  /// `callbacks.max_buffered_bytes`, or it holds half of the caller's stream window (which it
  /// gives back only once a replica has the bytes).
  var requestFull: Bool {
    request.isFull || caller.keepsTooMuch || heldWindow >= HTTP2Connection.Configuration.meshWindowSize / 2
  }

  /// Tells the connection how many request bytes this call keeps now.
  func reportKept() {
    let retained = request.retained
    guard retained != keptReported else { return }
    caller.keptChanged(by: retained - keptReported)
    keptReported = retained
  }

  /// Gives the caller `bytes` of its stream's window back.
  func giveWindow(_ bytes: Int) {
    caller.write(.windowUpdate(windowSizeIncrement: bytes), on: streamID)
  }
}
