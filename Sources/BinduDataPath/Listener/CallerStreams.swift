import BinduHTTP2
import BinduMeshConfig
import Logging
import NIOCore
import NIOHTTP2

/// One connection from the core to a callback listener, as its ``HTTP2Connection``'s delegate:
/// each stream the core opens is a ``ProxyCall``, and this handler routes the stream's frames
/// to it and its answer back, and drains the connection on shutdown.
///
/// Frames stay on the connection: no channel per stream. Draining (``ChannelShouldQuiesceEvent``)
/// sends GOAWAY and closes the connection once its last call has ended, or when `grace` runs out.
final class CallerStreams: HTTP2ConnectionDelegate {
  private let pool: ReplicaPool
  /// The listener's counters of its connections.
  private let metrics: CallerConnectionMetrics
  /// The calls' limits and the connection's timeouts, brought up to date after a reload.
  private let settings: LiveSettings
  private var live: LiveSettings.Snapshot
  private var limits: MeshConfig.Upstream { live.values.upstream }
  /// The pool's retry policy, brought up to date after a reload.
  private var retry: ReplicaPool.RetrySnapshot
  private var callers: MeshConfig.Callbacks { live.values.callers }
  private let openedAt = NIODeadline.now()
  /// When the last call ended (or the connection opened), while no call is open.
  private var idleSince = NIODeadline.now()
  private let logger: Logger
  private let eventLoop: any EventLoop
  /// The connection this handler routes; set once, right after both are made.
  var connection: HTTP2Connection?
  private var calls = StreamIDMap<ProxyCall>()
  private var draining = false
  /// Requests refused on this connection (the first is logged).
  private var refusedRequests = 0
  /// Calls reset here because their answers waited too long for window (the first is logged).
  private var stalledStreams = 0
  /// Every second: the default deadline of calls that came without grpc-timeout, and the
  /// preface and idle timeouts.
  private var tick: Scheduled<Void>?
  /// Request bytes the calls here keep to move to another replica, between them.
  private var keptBytes = 0
  /// The server metrics of the last method called here: calls on a connection mostly share one.
  private var lastServerMetrics = LastCallMetrics()

  init(
    pool: ReplicaPool, metrics: CallerConnectionMetrics, settings: LiveSettings, eventLoop: any EventLoop, logger: Logger
  ) {
    self.pool = pool
    self.metrics = metrics
    self.settings = settings
    self.live = settings.current
    self.retry = pool.retrySnapshot
    self.eventLoop = eventLoop
    self.logger = logger
  }

  /// Sends `payload` on the caller's stream `streamID` (flushed once per event-loop tick);
  /// `promise` completes once it is written.
  func write(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID, promise: EventLoopPromise<Void>? = nil) {
    guard let connection else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    connection.write(payload, on: streamID, promise: promise)
  }

  /// Whether the calls here keep `callbacks.max_buffered_bytes` of their requests between them:
  /// each then keeps nothing more once a replica has it (it can no longer move), and a call
  /// waiting for a replica takes one at once and no more of its request until then.
  var keepsTooMuch: Bool { keptBytes >= callers.maxBufferedBytes }

  /// A call keeps `delta` more (or fewer) bytes of its request.
  func keptChanged(by delta: Int) { keptBytes += delta }

  /// The pool's server metrics of calls to `path`, without a lock when the last call here had
  /// the same method.
  func serverMetrics(path: String) -> GRPCCallMetrics {
    lastServerMetrics.metrics(path: path) { pool.serverMetrics(path: $0) }
  }

  func connectionActive() { everySecond() }

  /// Ends the calls past their default deadline, and the connection when its preface is late
  /// or it has been idle too long; then checks again in a second, until the connection closes.
  private func everySecond() {
    settings.refresh(&live)
    let now = NIODeadline.now()
    if limits.defaultCallTimeout != nil {
      for id in calls.ids { calls[id]?.checkDefaultDeadline(now: now) }
    }
    guard let connection else { return }
    if !connection.peerSettingsReceived && now - openedAt >= callers.prefaceTimeout.timeAmount {
      metrics.connectionsClosed(reason: "preface_timeout").increment()
      logger.notice(
        "caller connection closed: no HTTP/2 preface and SETTINGS in time",
        metadata: ["mesh.peer": "\(peerDescription)", "mesh.timeout": "\(callers.prefaceTimeout)"])
      connection.close()
      return
    }
    let stalled = connection.checkStalledWindows(now: now)
    if stalled > 0 {
      metrics.stalledStreams.increment(by: stalled)
      stalledStreams += stalled
      if stalledStreams == stalled {
        logger.warning(
          "caller's calls reset: their answers waited for window the caller did not grant",
          metadata: ["mesh.peer": "\(peerDescription)", "mesh.streams": "\(stalled)", "mesh.timeout": "\(callers.stalledWindowTimeout.map { "\($0)" } ?? "off")"])
      }
    }
    if let idle = callers.idleTimeout, calls.isEmpty, !draining, now - idleSince >= idle.timeAmount {
      metrics.connectionsClosed(reason: "idle_timeout").increment()
      logger.debug("caller connection idle: GOAWAY", metadata: ["mesh.peer": "\(peerDescription)"])
      drain()
    }
    tick = eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { [self] in everySecond() }
  }

  func received(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID) {
    if let call = calls[streamID] {
      call.received(payload)
      return
    }
    guard case .headers = payload else { return }
    settings.refresh(&live)
    pool.refreshRetry(&retry)
    let call = ProxyCall(
      caller: self, streamID: streamID, eventLoop: eventLoop, pool: pool, limits: limits, retry: retry.retry,
      logger: logger)
    calls[streamID] = call
    call.received(payload)
  }

  func streamClosed(_ streamID: HTTP2StreamID, reason: HTTP2ErrorCode?) {
    calls.removeValue(forKey: streamID)?.callerClosed()
    if calls.isEmpty { idleSince = .now() }
    if draining && calls.isEmpty { connection?.closeSoon() }
  }

  func receivedGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {}

  func receivedPingAck(_ data: HTTP2PingData) {}

  func refusedRequest(on streamID: HTTP2StreamID, _ problem: String, reason: RequestRefusal) {
    refusedRequests += 1
    metrics.refusedRequests[reason]?.increment()
    guard refusedRequests == 1 else { return }
    logger.warning(
      "caller's request refused: it cannot be forwarded",
      metadata: ["reason": "\(problem)", "mesh.peer": "\(peerDescription)", "mesh.stream": "\(streamID)"])
  }

  private var peerDescription: String { connection?.remoteAddress.map { "\($0)" } ?? "unknown" }

  func receivedEvent(_ event: Any) {
    if event is ChannelShouldQuiesceEvent { drain() }
  }

  func connectionFailed(_ reason: String, goAway: String?) {
    let peer = peerDescription
    guard let goAway else {
      logger.debug("caller connection failed", metadata: ["error": "\(reason)", "mesh.peer": "\(peer)"])
      return
    }
    // Once per connection: it closes now.
    metrics.goAways(reason: goAway).increment()
    logger.warning(
      "caller connection ended with GOAWAY", metadata: ["reason": "\(reason)", "mesh.peer": "\(peer)"])
  }

  func connectionInactive() {
    tick?.cancel()
    tick = nil
    let open = calls
    calls.removeAll()
    for id in open.ids { open[id]!.callerClosed() }
    connection = nil
  }

  /// Tells the core no new calls are taken here (GOAWAY) and closes once the open ones end.
  private func drain() {
    guard !draining, let connection else { return }
    draining = true
    connection.goAway(errorCode: .noError)
    if calls.isEmpty {
      connection.closeSoon()
      return
    }
    eventLoop.assumeIsolated().scheduleTask(in: live.values.grace.timeAmount) { [self] in self.connection?.close() }
  }
}
