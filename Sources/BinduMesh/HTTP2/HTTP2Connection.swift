import NIOCore
import NIOHPACK
import NIOHTTP2

/// One HTTP/2 connection of the data path, client or server, as the last handler of its
/// pipeline: it reads frames from the bytes in place, keeps the protocol's state (SETTINGS,
/// PING, flow control, stream states, GOAWAY, HPACK), hands each stream's HEADERS and DATA to
/// its ``HTTP2ConnectionDelegate`` and writes the frames the delegate sends.
///
/// Built for a proxy that forwards frames between connections on one event loop:
/// - DATA payloads stay slices of the bytes read, and are written on as they are.
/// - Frames are encoded into one buffer, written and flushed once per event-loop tick, so every
///   call handled in a tick leaves in one `writev`.
/// - The connection's own window goes back to the peer once half of it is read (the mesh reads
///   every frame as it arrives); each stream's window goes back when the delegate sends the
///   stream's WINDOW_UPDATE, once the data has been written onwards (backpressure).
/// - DATA the peer's windows do not take yet waits per stream, in order with the frames after it,
///   and leaves as WINDOW_UPDATEs arrive; its write promise completes when it is written.
///
/// A peer that breaks the protocol gets GOAWAY with the error's code and the connection closes;
/// a stream that breaks flow control is reset.
final class HTTP2Connection: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  /// The settings this side announces.
  struct Configuration: Sendable {
    /// Streams the peer may have open at once (server side).
    var maxConcurrentStreams: Int
    /// The flow-control window offered per stream and for the connection.
    var windowSize = 1 << 20
    /// The largest header list accepted.
    var maxHeaderListSize = HPACKDecoder.defaultMaxHeaderListSize
    /// What the peer may make this connection do before it is cut off (ENHANCE_YOUR_CALM).
    var guards = HTTP2Guards.Limits()
  }

  enum Mode {
    /// Opens streams (odd IDs): a connection to a replica.
    case client
    /// Accepts streams: a connection from the core.
    case server
  }

  /// The header block of a stream being read across CONTINUATION frames.
  struct PartialHeaderBlock {
    var streamID: HTTP2StreamID
    var endStream: Bool
    var block: ByteBuffer
  }

  let mode: Mode
  let configuration: Configuration
  var delegate: (any HTTP2ConnectionDelegate)?
  var context: ChannelHandlerContext?
  var reader: HTTP2FrameReader
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
  var started = false
  /// The peer's preface and first SETTINGS have arrived.
  var peerSettingsReceived = false
  /// A protocol violation ended the connection: nothing more is read.
  var failed = false
  /// The peer's floods so far.
  var guards: HTTP2Guards

  var outboundConnectionWindow = HTTP2Protocol.defaultWindow
  var inboundConnectionWindow = HTTP2Protocol.defaultWindow
  var peerInitialWindow = HTTP2Protocol.defaultWindow
  var peerMaxFrameSize = HTTP2Protocol.defaultMaxFrameSize
  var peerMaxConcurrentStreams = Int.max

  /// Frames encoded this tick, and the promises of the ones written with one.
  var output = ByteBuffer()
  var outputPromises: [EventLoopPromise<Void>] = []
  var flushScheduled = false

  init(mode: Mode, configuration: Configuration, delegate: any HTTP2ConnectionDelegate) {
    self.mode = mode
    self.configuration = configuration
    self.delegate = delegate
    self.reader = HTTP2FrameReader(expectsPreface: mode == .server)
    self.decoder = HeaderBlockDecoder(maxHeaderListSize: configuration.maxHeaderListSize)
    self.guards = HTTP2Guards(limits: configuration.guards)
  }

  // MARK: State the delegates read

  /// Whether this client may open a stream now: no GOAWAY either way, stream IDs left, and
  /// under the peer's SETTINGS_MAX_CONCURRENT_STREAMS (see ``isAtCapacity``).
  var acceptsStreams: Bool { context != nil && !goAwayReceived && !goAwaySent && nextStreamID < Self.lastStreamID }

  /// Whether the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached: a new stream waits for one
  /// to close.
  var isAtCapacity: Bool { streams.count >= peerMaxConcurrentStreams }

  /// Stream IDs are odd and below 2^31; a connection that has used them up is replaced.
  static let lastStreamID = HTTP2StreamID(Int32.max - 2)

  // MARK: Channel events

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    output = context.channel.allocator.buffer(capacity: 1024)
    if context.channel.isActive { start() }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    failEverythingPending()
    delegate?.connectionInactive()  // a connection that never became active ends here
    delegate = nil  // the delegate keeps this connection to write: end the cycle
  }

  func channelActive(context: ChannelHandlerContext) {
    start()
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.context = nil  // from here on, writes fail at once
    failEverythingPending()
    delegate?.connectionInactive()
    delegate = nil
    context.fireChannelInactive()
  }

  /// A caller that does not read what the mesh writes (its answers, PING and SETTINGS
  /// acknowledgements) is not read either until it catches up, so it cannot pile up the mesh's
  /// memory with frames that each cost an answer.
  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if mode == .server {
      context.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenFailure { _ in }
    }
    context.fireChannelWritabilityChanged()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    delegate?.receivedEvent(event)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    delegate?.connectionFailed("\(error)", goAway: nil)
    context.close(promise: nil)
  }

  /// Writes the preface (client), SETTINGS and the connection's larger window.
  func start() {
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
    scheduleFlush()
    delegate?.connectionActive()
  }

  /// A new stream's state, with the windows both sides announced.
  func newStream(opened: Bool) -> HTTP2StreamState {
    var stream = HTTP2StreamState(outboundWindow: peerInitialWindow, inboundWindow: configuration.windowSize)
    stream.opened = opened
    return stream
  }

  // MARK: Streams ending

  /// Forgets a stream both sides have ended and tells the delegate.
  ///
  /// A server whose response is complete before the request asks the client to stop sending
  /// with RST_STREAM `NO_ERROR` (RFC 9113 §8.1), so no stream waits on a request nobody reads.
  func closeIfEnded(_ streamID: HTTP2StreamID) {
    guard let stream = streams[streamID], stream.localEnded, stream.waiting.isEmpty else { return }
    if !stream.remoteEnded {
      guard mode == .server else { return }
      writeReset(streamID, .noError)
    }
    streams.removeValue(forKey: streamID)
    delegate?.streamClosed(streamID, reason: nil)
  }

  /// Resets a stream with `code`; `notifying` tells the delegate the stream is gone.
  func reset(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode, notifying: Bool) {
    let wasOpen = remove(streamID)
    writeReset(streamID, code)
    if notifying && wasOpen { delegate?.streamClosed(streamID, reason: code) }
  }

  /// Frames that have waited too long for window the peer does not grant
  /// (``HTTP2Guards/Limits/stalledWindowTimeout``): a stream whose own window stays shut is
  /// reset (CANCEL) and the connection goes on; a connection whose window stays shut is cut off
  /// (GOAWAY `ENHANCE_YOUR_CALM`). Its owner calls it every second or so; the streams reset.
  @discardableResult
  func checkStalledWindows(now: NIODeadline) -> Int {
    let connectionStalled = !blockedStreams.isEmpty && outboundConnectionWindow <= 0
    if let violation = guards.checkWindow(waiting: connectionStalled, now: now) {
      fail(HTTP2ConnectionError(violation, limits: guards.limits))
      return 0
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

  /// Resets a stream the peer got wrong (its delegate is told), counting it against the
  /// connection's glitch budget (``HTTP2Guards/Limits/maxGlitches``).
  func streamError(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode) throws(HTTP2ConnectionError) {
    reset(streamID, code, notifying: true)
    if let violation = guards.glitch() { throw HTTP2ConnectionError(violation, limits: guards.limits) }
  }

  /// Forgets a stream, failing the frames that wait on it; whether it was open.
  @discardableResult
  func remove(_ streamID: HTTP2StreamID) -> Bool {
    guard let stream = streams.removeValue(forKey: streamID) else { return false }
    for frame in stream.waiting { frame.promise?.fail(ChannelError.ioOnClosedChannel) }
    return true
  }

  /// Fails every write not yet done and forgets the streams (the connection is gone).
  func failEverythingPending() {
    for id in streams.ids {
      for frame in streams[id]!.waiting { frame.promise?.fail(ChannelError.ioOnClosedChannel) }
    }
    streams.removeAll()
    blockedStreams.removeAll()
    let promises = outputPromises
    outputPromises.removeAll()
    for promise in promises { promise.fail(ChannelError.ioOnClosedChannel) }
  }

  /// Ends the connection for a protocol violation: GOAWAY with its code, then close.
  func fail(_ error: HTTP2ConnectionError) {
    guard let context, !failed else { return }
    failed = true
    writeGoAway(lastStreamID: lastPeerStreamID, code: error.code, debugData: nil)
    delegate?.connectionFailed(error.description, goAway: error.label)
    flush()
    context.close(promise: nil)
  }

  // MARK: Flushing

  func scheduleFlush() {
    guard !flushScheduled, let context else { return }
    flushScheduled = true
    context.eventLoop.assumeIsolated().execute { [self] in
      flushScheduled = false
      flush()
    }
  }

  /// Writes what this tick encoded and flushes.
  func flush() {
    guard let context else { return }
    emitOutput()
    context.flush()
  }

  /// Writes the tick's buffer (without flushing) and completes its promises once it is written.
  func emitOutput() {
    guard let context, output.readableBytes > 0 || !outputPromises.isEmpty else { return }
    let promise: EventLoopPromise<Void>?
    switch outputPromises.count {
    case 0: promise = nil
    case 1: promise = outputPromises[0]
    default:
      let all = outputPromises
      let combined = context.eventLoop.makePromise(of: Void.self)
      combined.futureResult.whenComplete { result in
        for promise in all { promise.completeWith(result) }
      }
      promise = combined
    }
    outputPromises.removeAll(keepingCapacity: true)
    context.write(wrapOutboundOut(output), promise: promise)
    output.clear()
  }
}
