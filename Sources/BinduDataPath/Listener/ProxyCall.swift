import BinduHTTP2
import BinduMeshConfig
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Forwards one call from the core to one replica of the pool, frame by frame.
///
/// The caller's connection (``CallerStreams``) hands the call its stream's frames.
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
  enum State {
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
  let caller: CallerStreams
  let streamID: HTTP2StreamID
  let eventLoop: any EventLoop

  let pool: ReplicaPool
  let limits: MeshConfig.Upstream
  let poolLogger: Logger
  /// The pool's logger with the call's method: made only when a line is logged.
  var logger: Logger { poolLogger.with("rpc.method", path) }
  var state = State.idle
  /// The request's frames so far, kept until the replica commits so the call can move.
  var request: KeptRequest
  /// Window the caller is owed for request bytes the call took while it waited for a replica;
  /// given back once the replica has them written.
  var heldWindow = 0
  /// The flow-control windows of the caller's stream (request) and the replica's (response).
  var requestWindow = ForwardingWindow()
  var responseWindow = ForwardingWindow()
  var requestHeaders = HPACKHeaders()
  /// The call's `:path`, such as `/bindu.grpc.AgentHandler/HandleMessages`.
  var path = ""
  /// When the call must end (``CallDeadline``), and the timer of a caller's deadline.
  var deadline: CallDeadline?
  var deadlineTimer: Scheduled<Void>?
  var tried: [Endpoint] = []
  /// The endpoint the current attempt counts on (``ReplicaPool/release(_:attempt:)`` when it ends).
  var picked: Endpoint?
  /// Passive health: whether the current attempt counts as its replica's failure, once that is
  /// known (`nil`: it does not count either way); given to the pool with the attempt's end.
  var judged: Bool?
  var responseStarted = false
  var counted = false
  var holdsRetry = false
  var requestScanner: MessageFrameScanner
  var responseScanner: MessageFrameScanner
  /// Metrics of the call the core made, and when it began.
  var serverMetrics: GRPCCallMetrics?
  var startedAt: ContinuousClock.Instant
  /// Metrics of the current attempt on a replica, and when it began.
  var attemptMetrics: GRPCCallMetrics?
  var attemptStartedAt: ContinuousClock.Instant
  /// When the attempt's stream opened: the replica's own time, for its figures, excludes
  /// connecting to it (the first call on a new connection would look slow).
  var streamOpenedAt: ContinuousClock.Instant
  var attemptOpened = false
  /// When the call last began waiting in the pool's queue, and how long it has waited there.
  var queuedAt: ContinuousClock.Instant?
  var queueWaited = Duration.zero
  /// The replicas tried so far, and the last (for the access log).
  var attempts = 0
  var lastReplica: Endpoint?
  /// Request bytes this call keeps, as last told to its connection (``reportKept()``).
  var keptReported = 0
  /// The call's spans, when tracing is on.
  var trace: CallTrace?
  /// The body of a `grpc.health.v1` Check the mesh answers itself.
  var localHealthBody: ByteBuffer?
  /// When the call moves to another replica: the pool's retry policy when the call began (a
  /// reload changes it for later calls).
  let rules: RetryRules

  init(
    caller: CallerStreams, streamID: HTTP2StreamID, eventLoop: any EventLoop, pool: ReplicaPool,
    limits: MeshConfig.Upstream, retry: MeshConfig.Retry, logger: Logger
  ) {
    self.caller = caller
    self.streamID = streamID
    self.eventLoop = eventLoop
    self.pool = pool
    self.limits = limits
    self.poolLogger = logger
    self.rules = RetryRules(policy: retry)
    self.request = KeptRequest(limit: retry.maxKeptRequestBytes)
    self.requestScanner = MessageFrameScanner(limit: limits.maxMessageBytes)
    self.responseScanner = MessageFrameScanner(limit: limits.maxMessageBytes)
    self.startedAt = .now  // the call begins with the HEADERS that made it
    self.attemptStartedAt = startedAt
    self.streamOpenedAt = startedAt
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
      if trace != nil { trace!.requestBytes += data.data.readableBytes }
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
    endWithStatus(nil, "")
  }

  /// The service whose calls are forwarded, whatever the method (a replica answers the methods
  /// it does not know): the agent contract's.
  static let forwardedService = "/bindu.grpc.AgentHandler/"

  func begin(_ headers: HTTP2Frame.FramePayload.Headers) {
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
      endWithStatus(.unimplemented, "grpc.health.v1.Health/Watch is not offered: use Check")
      return
    }
    guard path.hasPrefix(Self.forwardedService) else {
      // Not the agent contract's: no replica serves it, so none is bothered with it.
      caller.refusedRequest(on: streamID, "unknown path \(path.prefix(128))", reason: .path)
      endWithStatus(
        .unimplemented, "unknown method \(path.prefix(128)): bindu-mesh forwards bindu.grpc.AgentHandler calls",
        logged: false)
      return
    }
    pool.beginCall()
    counted = true
    do {
      deadline = try CallDeadline.of(
        grpcTimeout: requestHeaders.first(name: "grpc-timeout"), defaultTimeout: limits.defaultCallTimeout, now: .now())
    } catch {
      endWithStatus(.invalidArgument, "malformed grpc-timeout \"\(error.value)\"")
      return
    }
    if let deadline, deadline.hasOwnTimer {
      deadlineTimer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline.at) { [self] in
        deadlineTimer = nil
        deadlineReached()
      }
    }
    if let tracer = pool.settings.tracer {
      trace = CallTrace(tracer: tracer, headers: requestHeaders, path: path, pool: pool.name, deadline: deadline?.timeout)
    }
    request.waiting(.headers(headers))
    state = .reading
    if headers.endStream { requestReadEnough() }
  }

  /// Ends the call if it came without a deadline and has run past the default one (its
  /// connection's tick: such a deadline has no timer of its own).
  func checkDefaultDeadline(now: NIODeadline) {
    guard let deadline, !deadline.hasOwnTimer, deadline.isPast(now) else { return }
    if case .finished = state { return }
    self.deadline = nil
    deadlineReached()
  }

  func deadlineReached() {
    if case .forwarding = state { judged = true }
    let replica: String
    switch state {
    case .forwarding(let endpoint, _), .connecting(let endpoint): replica = "replica \(endpoint.address) of "
    case .queued: replica = "a free replica in the queue of "
    default: replica = "a replica of "
    }
    endWithStatus(.deadlineExceeded, "deadline exceeded waiting for \(replica)pool \"\(pool.name)\"")
  }

}
