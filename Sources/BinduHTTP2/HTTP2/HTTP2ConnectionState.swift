import NIOCore
import NIOHPACK
import NIOHTTP2

/// The rules of one HTTP/2 connection of the data path (RFC 9113), as a value: the settings
/// both sides announced, the flow-control windows, each stream's state (``HTTP2StreamState``),
/// GOAWAY, HPACK and the peer's floods (``HTTP2Guards``).
///
/// It is fed the peer's frames (``read(_:now:)``) and this side's frames (``write(_:on:promise:)``)
/// and does no I/O of its own: the frames it answers with are encoded into ``output``, and what
/// the connection's owner must then do (hand a stream's frames on, tell that a stream closed,
/// complete a write's promise) is queued in ``effects``. ``HTTP2Connection`` is the thin
/// `ChannelHandler` around it that writes the one and carries out the other, outside any
/// mutation of this value, so that nothing it calls can reenter the rules half-way.
///
/// Stream states, as RFC 9113 §5.1 names them: a stream in ``streams`` is open, or half-closed
/// (``HTTP2StreamState/localEnded``: local, ``HTTP2StreamState/remoteEnded``: remote); a stream
/// not in it is idle when its ID is above the last one opened (see ``checkNotIdle(_:_:)``), and
/// closed otherwise. A stream closes once its response is complete: a server's last frame is
/// written, or a client's last frame is read (the rest of the request, if any, is then cut off
/// with RST_STREAM `NO_ERROR`).
public struct HTTP2ConnectionState {
  /// The settings this side announces, and its limits.
  public struct Configuration: Sendable {
    /// Settings with `maxConcurrentStreams` and the window, and the other limits at their defaults.
    public init(maxConcurrentStreams: Int, windowSize: Int = 1 << 20) {
      self.maxConcurrentStreams = maxConcurrentStreams
      self.windowSize = windowSize
    }

    /// Streams the peer may have open at once (server side).
    public var maxConcurrentStreams: Int
    /// The flow-control window offered per stream and for the connection.
    public var windowSize = 1 << 20
    /// The largest header list accepted.
    public var maxHeaderListSize = HPACKDecoder.defaultMaxHeaderListSize
    /// The most bytes of the peer's DATA this side holds across the connection's streams: read,
    /// and not yet given back to the peer with a stream WINDOW_UPDATE (which the mesh sends once
    /// they are written onwards, 64 KiB at a time). Past it the connection's window is
    /// not given back until some are, so that one connection cannot pin more than this and one
    /// window, however many streams it opens. `nil`: no limit but the streams' windows.
    public var maxBufferedBytes: Int? = nil
    /// What the peer may make this connection do before it is cut off (ENHANCE_YOUR_CALM).
    public var guards = HTTP2Guards.Limits()
  }

  public enum Mode {
    /// Opens streams (odd IDs): a connection to a replica.
    case client
    /// Accepts streams: a connection from the core.
    case server
  }

  /// What the connection's owner does once a call into this value returns, in order.
  enum Effect {
    /// HEADERS (a whole header block) or DATA of a stream, for the delegate.
    case received(HTTP2Frame.FramePayload, on: HTTP2StreamID)
    /// A stream closed; `reason` is the RST_STREAM code, `nil` when both sides ended it.
    case streamClosed(HTTP2StreamID, reason: HTTP2ErrorCode?)
    /// A request was refused (reset, or answered here) before it reached the delegate, or cut
    /// off for breaking its `content-length` (``RequestHeaderCheck``).
    case refusedRequest(HTTP2StreamID, problem: String, reason: RequestRefusal)
    /// The peer's GOAWAY.
    case receivedGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode)
    /// The peer acknowledged a PING.
    case receivedPingAck(HTTP2PingData)
    /// A write's promise: done (nothing to write), or failed (its stream or connection is gone).
    case completeWrite(EventLoopPromise<Void>, failed: Bool)
  }

  /// The header block of a stream being read across CONTINUATION frames.
  struct PartialHeaderBlock {
    var streamID: HTTP2StreamID
    var endStream: Bool
    var block: ByteBuffer
  }

  let mode: Mode
  let configuration: Configuration
  var decoder: HeaderBlockDecoder
  var partialHeaders: PartialHeaderBlock?

  var streams = StreamIDMap<HTTP2StreamState>()
  /// Streams with frames waiting for the connection's window, in the order they began waiting.
  var blockedStreams: [HTTP2StreamID] = []
  /// Client: the ID of the next stream this side opens. Server: the highest the peer opened.
  var nextStreamID: HTTP2StreamID = 1
  var lastPeerStreamID: HTTP2StreamID = .rootStream
  var goAwaySent = false
  var goAwayReceived = false
  /// The preface and SETTINGS are encoded.
  var started = false
  /// The peer's preface and first SETTINGS have arrived.
  var peerSettingsReceived = false
  /// A protocol violation ended the connection: nothing more is read.
  var failed = false
  /// The peer's floods so far.
  public var guards: HTTP2Guards

  var outboundConnectionWindow = HTTP2Protocol.defaultWindow
  var inboundConnectionWindow = HTTP2Protocol.defaultWindow
  /// Bytes of the peer's DATA on open streams not yet given back with a stream WINDOW_UPDATE.
  var bufferedBytes = 0
  var peerInitialWindow = HTTP2Protocol.defaultWindow
  var peerMaxFrameSize = HTTP2Protocol.defaultMaxFrameSize
  var peerMaxConcurrentStreams = Int.max
  /// The peer's SETTINGS_MAX_HEADER_LIST_SIZE, if it announced one.
  var peerMaxHeaderListSize: Int?

  /// Frames encoded and not yet written: buffers to write first (large DATA payloads, written
  /// as they are, and the frames before them), then ``output``.
  var earlierOutput: [ByteBuffer] = []
  var output = ByteBuffer()
  /// Promises of the frames in the output, completed once it is written.
  var outputPromises: [EventLoopPromise<Void>] = []
  /// What the owner must do next (see ``Effect``).
  var effects: [Effect] = []

  init(mode: Mode, configuration: Configuration) {
    self.mode = mode
    self.configuration = configuration
    self.decoder = HeaderBlockDecoder(maxHeaderListSize: configuration.maxHeaderListSize)
    self.guards = HTTP2Guards(limits: configuration.guards)
    self.effects.reserveCapacity(4)
  }

  // MARK: State the owner reads

  /// Whether this client may open a stream: no GOAWAY either way and stream IDs left (see also
  /// ``isAtCapacity``).
  var acceptsStreams: Bool { !goAwayReceived && !goAwaySent && !failed && nextStreamID < Self.lastStreamID }

  /// Whether the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached: a new stream waits for one
  /// to close.
  var isAtCapacity: Bool { streams.count >= peerMaxConcurrentStreams }

  /// Whether frames are encoded and not yet written (or promises wait for them).
  var hasOutput: Bool { output.readableBytes > 0 || !outputPromises.isEmpty || !earlierOutput.isEmpty }

  /// Stream IDs are odd and below 2^31; a connection that has used them up is replaced.
  static let lastStreamID = HTTP2StreamID(Int32.max - 2)

  // MARK: Starting and failing

  /// Encodes the preface (client), SETTINGS and the connection's larger window.
  mutating func start() {
    guard !started else { return }
    started = true
    if mode == .client { output.writeBytes(HTTP2Protocol.preface) }
    let settings: [(UInt16, Int)] = [
      (0x3, configuration.maxConcurrentStreams),  // MAX_CONCURRENT_STREAMS
      (0x4, configuration.windowSize),  // INITIAL_WINDOW_SIZE
      (0x6, configuration.maxHeaderListSize),  // MAX_HEADER_LIST_SIZE
    ] + (mode == .client ? [(0x2, 0)] : [])  // ENABLE_PUSH: off
    output.writeHTTP2FrameHeader(length: 6 * settings.count, kind: .settings, streamID: .rootStream)
    for (parameter, value) in settings {
      output.writeInteger(parameter)
      output.writeInteger(UInt32(value))
    }
    let increment = configuration.windowSize - inboundConnectionWindow
    if increment > 0 {
      output.writeHTTP2Frame(kind: .windowUpdate, streamID: .rootStream, value: UInt32(increment))
      inboundConnectionWindow = configuration.windowSize
    }
  }

  /// Ends the connection for a protocol violation: encodes GOAWAY with its code. Returns `false`
  /// when it had failed already.
  mutating func fail(_ error: HTTP2ConnectionError) -> Bool {
    guard !failed else { return false }
    failed = true
    writeGoAway(lastStreamID: lastPeerStreamID, code: error.code, debugData: nil)
    return true
  }

  /// Fails every write not yet done and forgets the streams (the connection is gone).
  mutating func failEverythingPending() {
    for id in streams.ids { remove(id) }
    blockedStreams.removeAll()
    for promise in outputPromises { effects.append(.completeWrite(promise, failed: true)) }
    outputPromises.removeAll()
    earlierOutput.removeAll()
    output.clear()
  }

  // MARK: Streams

  /// A new stream's state, with the windows both sides announced.
  func newStream(opened: Bool) -> HTTP2StreamState {
    var stream = HTTP2StreamState(outboundWindow: peerInitialWindow, inboundWindow: configuration.windowSize)
    stream.opened = opened
    return stream
  }

  /// Closes a stream whose response is complete and whose frames are all written: both sides
  /// ended it, or only the response did, and the rest of the request is cut off with RST_STREAM
  /// `NO_ERROR` (RFC 9113 §8.1), so no stream waits on a request nobody reads.
  mutating func closeIfEnded(_ streamID: HTTP2StreamID) {
    guard let stream = streams[streamID] else { return }
    let responseEnded = mode == .server ? stream.localEnded && stream.waiting.isEmpty : stream.remoteEnded
    guard responseEnded else { return }
    if !(stream.localEnded && stream.waiting.isEmpty && stream.remoteEnded) { writeReset(streamID, .noError) }
    remove(streamID)
    effects.append(.streamClosed(streamID, reason: nil))
  }

  /// Resets a stream with `code`; `notifying` tells the delegate the stream is gone.
  mutating func reset(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode, notifying: Bool) {
    let wasOpen = remove(streamID)
    writeReset(streamID, code)
    if notifying && wasOpen { effects.append(.streamClosed(streamID, reason: code)) }
  }

  /// Resets a stream the peer got wrong (its delegate is told), counting it against the
  /// connection's glitch budget (``HTTP2Guards/Limits/maxGlitches``).
  mutating func streamError(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode) throws(HTTP2ConnectionError) {
    reset(streamID, code, notifying: true)
    if let violation = guards.glitch() { throw HTTP2ConnectionError(violation, limits: guards.limits) }
  }

  /// Forgets a stream, failing the frames that wait on it and freeing what it held of the
  /// connection's buffered bytes; whether it was open.
  @discardableResult
  mutating func remove(_ streamID: HTTP2StreamID) -> Bool {
    guard let stream = streams.removeValue(forKey: streamID) else { return false }
    for frame in stream.waiting {
      if let promise = frame.promise { effects.append(.completeWrite(promise, failed: true)) }
    }
    released(configuration.windowSize - stream.inboundWindow)
    return true
  }

  /// Frames that have waited too long for window the peer does not grant
  /// (``HTTP2Guards/Limits/stalledWindowTimeout``): a stream whose own window stays shut is
  /// reset (CANCEL) and the connection goes on; a connection whose window stays shut is cut off
  /// (GOAWAY `ENHANCE_YOUR_CALM`). Its owner calls it every second or so; the streams reset.
  mutating func checkStalledWindows(now: NIODeadline) throws(HTTP2ConnectionError) -> Int {
    let connectionStalled = !blockedStreams.isEmpty && outboundConnectionWindow <= 0
    if let violation = guards.checkWindow(waiting: connectionStalled, now: now) {
      throw HTTP2ConnectionError(violation, limits: guards.limits)
    }
    guard let timeout = guards.limits.stalledWindowTimeout else { return 0 }
    var reset = 0
    for id in streams.ids {
      guard let stream = streams[id], !stream.waiting.isEmpty, stream.outboundWindow <= 0 else {
        streams[id]?.stalledSince = nil
        continue
      }
      guard let since = stream.stalledSince else {
        streams[id]!.stalledSince = now
        continue
      }
      if now - since >= timeout {
        self.reset(id, .cancel, notifying: true)
        reset += 1
      }
    }
    return reset
  }
}
