import BinduHTTP2
import NIOCore
import NIOHTTP2
import NIOTLS

/// The streams of one connection to a replica, as its ``HTTP2Connection``'s delegate: gives each
/// call a stream of its own on the shared connection, routes the replica's frames to the call
/// by stream ID, and watches the connection (``UpstreamLiveness``).
///
/// Frames stay on the connection: no channel per stream. A GOAWAY from the replica stops new
/// streams here; the calls on streams it says it never began move to another replica. A call
/// that finds the connection at the replica's SETTINGS_MAX_CONCURRENT_STREAMS waits for a
/// stream to end (``whenStreamSlotFrees(_:)``).
final class UpstreamStreams: HTTP2ConnectionDelegate {
  private let liveness: UpstreamLiveness
  private let eventLoop: any EventLoop
  /// The connection this handler routes; set once, right after both are made.
  var connection: HTTP2Connection?
  private var streams = StreamIDMap<any UpstreamStreamDelegate>()
  /// Opens waiting for a stream to end, when the replica's concurrency limit is reached.
  private var waitingForSlot: [() -> Void] = []
  /// The connection's last error, told to the calls it ends.
  private var failure: String?
  /// Completed when the connection is up and its HTTP/2 preface sent and, with TLS, the
  /// handshake done and the replica's identity accepted; failed when it closes first, so a call
  /// that could not reach the replica moves to another.
  private var activation: EventLoopPromise<Void>?
  private let awaitsHandshake: Bool

  init(liveness: UpstreamLiveness, eventLoop: any EventLoop, activation: EventLoopPromise<Void>, awaitsHandshake: Bool) {
    self.liveness = liveness
    self.eventLoop = eventLoop
    self.activation = activation
    self.awaitsHandshake = awaitsHandshake
  }

  /// Whether a new stream must wait for one to end: the connection takes new streams (no
  /// GOAWAY, stream IDs left) but is at the replica's SETTINGS_MAX_CONCURRENT_STREAMS.
  var waitsForStreamSlot: Bool { connection.map { $0.acceptsStreams && $0.isAtCapacity } ?? false }

  /// Opens a stream reporting to `delegate`, or `nil` when this connection takes no new
  /// streams now.
  func open(_ delegate: any UpstreamStreamDelegate) -> UpstreamStream? {
    guard let connection, let id = connection.openStream() else { return nil }
    streams[id] = delegate
    return UpstreamStream(id: id, connection: self)
  }

  /// Runs `body` once a stream of this connection has ended (or the connection closed).
  func whenStreamSlotFrees(_ body: @escaping () -> Void) {
    waitingForSlot.append(body)
  }

  func write(_ payload: HTTP2Frame.FramePayload, on id: HTTP2StreamID, promise: EventLoopPromise<Void>? = nil) {
    guard let connection else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    connection.write(payload, on: id, promise: promise)
  }

  func cancel(_ id: HTTP2StreamID) {
    guard streams[id] != nil else { return }
    write(.rstStream(.cancel), on: id)
    remove(id)
  }

  // MARK: HTTP2ConnectionDelegate

  func connectionActive() {
    if let connection { liveness.start(connection, on: eventLoop) }
    if !awaitsHandshake { succeedActivation() }
  }

  func received(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID) {
    streams[streamID]?.upstreamRead(payload)
  }

  func streamClosed(_ streamID: HTTP2StreamID, reason: HTTP2ErrorCode?) {
    remove(streamID)?.upstreamClosed(reason: reason, failure: nil)
  }

  func refusedRequest(on streamID: HTTP2StreamID, _ problem: String, reason: RequestRefusal) {}  // a server's only

  func receivedGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {
    for id in streams.ids where id > lastStreamID {
      remove(id)?.upstreamNeverBegan("the replica is going away (GOAWAY \(errorCode)) and never began the call")
    }
    runWaitingForSlot()  // they open elsewhere now
  }

  func receivedPingAck(_ data: HTTP2PingData) {
    liveness.pingAcknowledged(data)
  }

  func receivedEvent(_ event: Any) {
    if case TLSUserEvent.handshakeCompleted = event {
      succeedActivation()  // after PeerIdentityHandler, which passes this on only for an allowed peer
    } else if event is ChannelShouldQuiesceEvent {
      liveness.drain()
    }
  }

  func connectionFailed(_ reason: String, goAway: String?) {
    failure = reason
  }

  func connectionInactive() {
    liveness.stop()
    failActivation()
    for id in streams.ids {
      remove(id)?.upstreamClosed(reason: nil, failure: failure ?? "connection to the replica closed")
    }
    runWaitingForSlot()
    connection = nil
  }

  // MARK: Bookkeeping

  private func succeedActivation() {
    activation?.succeed()
    activation = nil
  }

  private func failActivation() {
    activation?.fail(UpstreamError.closedBeforeReady(tls: awaitsHandshake))
    activation = nil
  }

  private func runWaitingForSlot() {
    guard !waitingForSlot.isEmpty else { return }
    let waiting = waitingForSlot
    waitingForSlot.removeAll()
    for body in waiting { body() }
  }

  /// Forgets stream `id` (which the connection has forgotten already) and tells the liveness
  /// watch; returns whom it reported to, if it was open.
  @discardableResult
  private func remove(_ id: HTTP2StreamID) -> (any UpstreamStreamDelegate)? {
    guard let delegate = streams.removeValue(forKey: id) else { return nil }
    liveness.streamClosed()
    if !waitingForSlot.isEmpty {
      // After the current frame's work: the call that ended may still be writing.
      eventLoop.assumeIsolated().execute(waitingForSlot.removeFirst())
    }
    return delegate
  }
}
