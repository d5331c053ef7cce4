import NIOCore
import NIOHTTP2

/// One HTTP/2 connection of the data path, client or server, as the last handler of its
/// pipeline: a thin `ChannelHandler` around the connection's rules (``HTTP2ConnectionState``).
/// It splits the bytes read into frames (``HTTP2FrameReader``), feeds them to the rules, writes
/// what they encode, and carries out what they ask for: each stream's HEADERS and DATA to its
/// ``HTTP2ConnectionDelegate``, streams closed, promises completed.
///
/// Built for a proxy that forwards frames between connections on one event loop:
/// - DATA payloads stay slices of the bytes read, and are written on as they are.
/// - Frames are encoded into one buffer, written and flushed once per event-loop tick, so every
///   call handled in a tick leaves in one `writev`.
/// - The connection's own window goes back to the peer once half of it is read, up to
///   ``HTTP2ConnectionState/Configuration/maxBufferedBytes`` held; each stream's window goes
///   back when the delegate sends the stream's WINDOW_UPDATE, once the data has been written
///   onwards (backpressure).
/// - DATA the peer's windows do not take yet waits per stream, in order with the frames after it,
///   and leaves as WINDOW_UPDATEs arrive; its write promise completes when it is written.
///
/// A peer that breaks the protocol gets GOAWAY with the error's code and the connection closes
/// (a caller's after ``lingerTime``, so that the GOAWAY reaches it); a stream that breaks flow
/// control is reset.
public final class HTTP2Connection: ChannelInboundHandler {
  public typealias InboundIn = ByteBuffer
  public typealias OutboundOut = ByteBuffer
  public typealias Configuration = HTTP2ConnectionState.Configuration
  public typealias Mode = HTTP2ConnectionState.Mode

  public var delegate: (any HTTP2ConnectionDelegate)?
  private(set) var context: ChannelHandlerContext?
  private var reader: HTTP2FrameReader
  /// The rules, mutated only by this handler's methods, never while one of its effects runs.
  private(set) var state: HTTP2ConnectionState
  /// The effects being carried out (swapped with the state's queue, so neither allocates).
  private var running: [HTTP2ConnectionState.Effect] = []
  private var runningEffects = false
  /// The output being written (swapped with the state's, as the effects are).
  private var earlierOutput: [ByteBuffer] = []
  private var outputPromises: [EventLoopPromise<Void>] = []
  private var flushScheduled = false
  private var flushing = false
  /// Ended for a violation, and waiting for the GOAWAY to leave and the caller to close.
  private var lingering = false

  /// How long a caller's connection ended for a violation stays: its GOAWAY is written, the
  /// write side is shut, and what the caller sends is read and dropped until it closes or this
  /// time passes.
  public static let lingerTime = TimeAmount.seconds(2)

  public init(mode: Mode, configuration: Configuration, delegate: any HTTP2ConnectionDelegate) {
    self.delegate = delegate
    self.reader = HTTP2FrameReader(expectsPreface: mode == .server)
    self.state = HTTP2ConnectionState(mode: mode, configuration: configuration)
    running.reserveCapacity(4)
  }

  // MARK: State the delegates read

  /// Whether this client may open a stream now: connected, no GOAWAY either way, stream IDs
  /// left (see also ``isAtCapacity``).
  public var acceptsStreams: Bool { context != nil && state.acceptsStreams }
  /// Whether the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached.
  public var isAtCapacity: Bool { state.isAtCapacity }
  /// The peer's preface and first SETTINGS have arrived.
  public var peerSettingsReceived: Bool { state.peerSettingsReceived }
  /// The peer's SETTINGS_MAX_HEADER_LIST_SIZE, if it announced one.
  public var peerMaxHeaderListSize: Int? { state.peerMaxHeaderListSize }
  /// Streams open now.
  public var openStreams: Int { state.streams.count }

  /// The peer's address, while the connection is in a channel.
  public var remoteAddress: SocketAddress? { context?.channel.remoteAddress }

  // MARK: Channel events

  public func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    state.output = context.channel.allocator.buffer(capacity: 1024)
    if context.channel.isActive { start() }
  }

  public func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    ended()  // a connection that never became active ends here
  }

  public func channelActive(context: ChannelHandlerContext) {
    start()
    context.fireChannelActive()
  }

  public func channelInactive(context: ChannelHandlerContext) {
    self.context = nil  // from here on, writes fail at once
    ended()
    context.fireChannelInactive()
  }

  /// A caller that does not read what the mesh writes (its answers, PING and SETTINGS
  /// acknowledgements) is not read either until it catches up, so it cannot pile up the mesh's
  /// memory with frames that each cost an answer.
  public func channelWritabilityChanged(context: ChannelHandlerContext) {
    if state.mode == .server && !lingering {
      context.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenFailure { _ in }
    }
    context.fireChannelWritabilityChanged()
  }

  public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    delegate?.receivedEvent(event)
  }

  public func errorCaught(context: ChannelHandlerContext, error: any Error) {
    delegate?.connectionFailed("\(error)", goAway: nil)
    context.close(promise: nil)
  }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !lingering else { return }  // dropped: the connection has ended
    reader.append(unwrapInboundIn(data))
    let now = NIODeadline.now()
    do {
      while !state.failed, let frame = try reader.next() {
        try state.read(frame, now: now)
        runEffects()
      }
    } catch {
      runEffects()
      fail(error)
    }
    afterChange()
  }

  /// Writes the preface (client), SETTINGS and the connection's larger window.
  private func start() {
    guard !state.started else { return }
    state.start()
    scheduleFlush()
    delegate?.connectionActive()
  }

  /// The connection is gone: every write not yet done fails, and the delegate is told.
  private func ended() {
    state.failEverythingPending()
    runEffects()
    delegate?.connectionInactive()
    delegate = nil  // the delegate keeps this connection to write: end the cycle
  }

  // MARK: The delegates' calls

  /// Opens a stream (client): its ID, for the HEADERS the caller writes next; `nil` when
  /// ``acceptsStreams`` is false or the connection is at capacity.
  public func openStream() -> HTTP2StreamID? {
    guard context != nil else { return nil }
    return state.openStream()
  }

  /// Writes `payload` on stream `streamID` (flushed once the current tick's work is done);
  /// `promise` completes once it is written, and fails when the stream or the connection is gone
  /// first. HEADERS, DATA, RST_STREAM and WINDOW_UPDATE go on a stream; GOAWAY and PING on the
  /// root stream.
  public func write(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID, promise: EventLoopPromise<Void>? = nil) {
    guard context != nil else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    state.write(payload, on: streamID, promise: promise)
    afterChange()
  }

  /// Resets the streams whose answers have waited too long for window, or ends a connection
  /// whose window has (``HTTP2ConnectionState/checkStalledWindows(now:)``); the streams reset.
  @discardableResult
  public func checkStalledWindows(now: NIODeadline) -> Int {
    do {
      let reset = try state.checkStalledWindows(now: now)
      afterChange()
      return reset
    } catch {
      afterChange()
      fail(error)
      return 0
    }
  }

  /// Sends GOAWAY with `errorCode`, naming the last stream the peer opened: no new stream is
  /// taken from here on, and the streams open go on.
  public func goAway(errorCode: HTTP2ErrorCode) {
    write(.goAway(lastStreamID: state.lastPeerStreamID, errorCode: errorCode, opaqueData: nil), on: .rootStream)
  }

  /// Writes what this tick has encoded and closes the connection.
  public func close() {
    guard let context else { return }
    flush()
    context.close(promise: nil)
  }

  /// Closes the connection once the current tick's work is done, so a close never runs inside
  /// a call's own write and the last frames written leave first.
  public func closeSoon() {
    context?.eventLoop.assumeIsolated().execute { [self] in close() }
  }

  /// Ends the connection for a protocol violation: GOAWAY with its code, then close (a
  /// caller's connection lingers first: ``lingerTime``).
  public func fail(_ error: HTTP2ConnectionError) {
    guard let context, state.fail(error) else { return }
    delegate?.connectionFailed(error.description, goAway: error.label)
    flush()
    guard state.mode == .server else {
      context.close(promise: nil)
      return
    }
    linger(context)
  }

  /// Closes a caller's connection so that its GOAWAY arrives. A socket closed while bytes the
  /// peer sent are still unread is reset by the kernel, and a reset makes the peer drop what it
  /// had not read yet: the GOAWAY with it. So the calls end now, the write side is shut once
  /// everything written has left, and what the caller sends meanwhile is read and dropped, until
  /// it closes or ``lingerTime`` passes.
  private func linger(_ context: ChannelHandlerContext) {
    lingering = true
    reader = HTTP2FrameReader(expectsPreface: false)  // the bytes it held are dropped
    ended()
    let written = context.eventLoop.makePromise(of: Void.self)
    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
    written.futureResult.assumeIsolated().whenSuccess { [self] in
      self.context?.close(mode: .output, promise: nil)
    }
    context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) { [self] in
      self.context?.close(promise: nil)
    }
  }

  // MARK: Effects and output

  /// Carries out the state's effects, then schedules the flush of what it encoded.
  private func afterChange() {
    runEffects()
    if state.hasOutput { scheduleFlush() }
  }

  /// Carries out the effects the state queued, in order. One that calls back into this
  /// connection queues more, which this loop takes next (never nested).
  private func runEffects() {
    guard !runningEffects, !state.effects.isEmpty else { return }
    runningEffects = true
    defer { runningEffects = false }
    while !state.effects.isEmpty {
      swap(&running, &state.effects)
      for effect in running { perform(effect) }
      running.removeAll(keepingCapacity: true)
    }
  }

  private func perform(_ effect: HTTP2ConnectionState.Effect) {
    switch effect {
    case .received(let payload, let streamID): delegate?.received(payload, on: streamID)
    case .streamClosed(let streamID, let reason): delegate?.streamClosed(streamID, reason: reason)
    case .refusedRequest(let streamID, let problem, let reason): delegate?.refusedRequest(on: streamID, problem, reason: reason)
    case .receivedGoAway(let lastStreamID, let errorCode):
      delegate?.receivedGoAway(lastStreamID: lastStreamID, errorCode: errorCode)
    case .receivedPingAck(let data): delegate?.receivedPingAck(data)
    case .completeWrite(let promise, let failed):
      if failed { promise.fail(ChannelError.ioOnClosedChannel) } else { promise.succeed() }
    }
  }

  private func scheduleFlush() {
    guard !flushScheduled, let context else { return }
    flushScheduled = true
    context.eventLoop.assumeIsolated().execute { [self] in
      flushScheduled = false
      flush()
    }
  }

  /// Writes what this tick encoded and flushes: the buffers written before (large DATA
  /// payloads), then the output with its promises, made one.
  private func flush() {
    guard let context, !flushing else { return }
    flushing = true
    defer { flushing = false }
    if state.hasOutput {
      swap(&earlierOutput, &state.earlierOutput)
      swap(&outputPromises, &state.outputPromises)
      let output = state.output
      state.output.clear()
      for buffer in earlierOutput { context.write(wrapOutboundOut(buffer), promise: nil) }
      earlierOutput.removeAll(keepingCapacity: true)
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
    }
    context.flush()
  }
}
