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
  }

  enum Mode {
    /// Opens streams (odd IDs): a connection to a replica.
    case client
    /// Accepts streams: a connection from the core.
    case server
  }

  /// The header block of a stream being read across CONTINUATION frames.
  private struct PartialHeaderBlock {
    var streamID: HTTP2StreamID
    var endStream: Bool
    var block: ByteBuffer
  }

  private let mode: Mode
  private let configuration: Configuration
  private var delegate: (any HTTP2ConnectionDelegate)?
  private var context: ChannelHandlerContext?
  private var reader: HTTP2FrameReader
  private var decoder: HeaderBlockDecoder
  private var partialHeaders: PartialHeaderBlock?

  private var streams = StreamIDMap<HTTP2StreamState>()
  /// Streams with frames waiting for the connection's window, in the order they began waiting.
  private var blockedStreams: [HTTP2StreamID] = []
  /// Client: the ID of the next stream this side opens. Server: the highest the peer opened.
  private var nextStreamID: HTTP2StreamID = 1
  private var lastPeerStreamID: HTTP2StreamID = .rootStream
  private var goAwaySent = false
  private var goAwayReceived = false
  private var started = false
  /// A protocol violation ended the connection: nothing more is read.
  private var failed = false

  private var outboundConnectionWindow = HTTP2Protocol.defaultWindow
  private var inboundConnectionWindow = HTTP2Protocol.defaultWindow
  private var peerInitialWindow = HTTP2Protocol.defaultWindow
  private var peerMaxFrameSize = HTTP2Protocol.defaultMaxFrameSize
  private var peerMaxConcurrentStreams = Int.max

  /// Frames encoded this tick, and the promises of the ones written with one.
  private var output = ByteBuffer()
  private var outputPromises: [EventLoopPromise<Void>] = []
  private var flushScheduled = false

  init(mode: Mode, configuration: Configuration, delegate: any HTTP2ConnectionDelegate) {
    self.mode = mode
    self.configuration = configuration
    self.delegate = delegate
    self.reader = HTTP2FrameReader(expectsPreface: mode == .server)
    self.decoder = HeaderBlockDecoder(maxHeaderListSize: configuration.maxHeaderListSize)
  }

  // MARK: State the delegates read

  /// Whether frames can be written: the handler is in a pipeline.
  var isAttached: Bool { context != nil }

  /// Whether this client may open a stream now: no GOAWAY either way, stream IDs left, and
  /// under the peer's SETTINGS_MAX_CONCURRENT_STREAMS (see ``isAtCapacity``).
  var acceptsStreams: Bool { context != nil && !goAwayReceived && !goAwaySent && nextStreamID < Self.lastStreamID }

  /// Whether the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached: a new stream waits for one
  /// to close.
  var isAtCapacity: Bool { streams.count >= peerMaxConcurrentStreams }

  /// Streams open on the connection.
  var openStreams: Int { streams.count }

  /// Stream IDs are odd and below 2^31; a connection that has used them up is replaced.
  private static let lastStreamID = HTTP2StreamID(Int32.max - 2)

  // MARK: Channel events

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    output = context.channel.allocator.buffer(capacity: 1024)
    if context.channel.isActive { start() }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    failWaitingFrames()
    delegate?.connectionInactive()  // a connection that never became active ends here
    delegate = nil  // the delegate keeps this connection to write: end the cycle
  }

  func channelActive(context: ChannelHandlerContext) {
    start()
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    failWaitingFrames()
    streams.removeAll()
    blockedStreams.removeAll()
    let promises = outputPromises
    outputPromises.removeAll()
    for promise in promises { promise.fail(ChannelError.ioOnClosedChannel) }
    delegate?.connectionInactive()
    self.context = nil
    delegate = nil
    context.fireChannelInactive()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    delegate?.receivedEvent(event)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    delegate?.connectionFailed("\(error)")
    context.close(promise: nil)
  }

  /// Writes the preface (client), SETTINGS and the connection's larger window.
  private func start() {
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

  // MARK: Reading

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    reader.append(unwrapInboundIn(data))
    do {
      while !failed, let frame = try reader.next() {
        try handle(frame)
      }
    } catch {
      fail(error)
    }
  }

  private func handle(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    if let partial = partialHeaders {
      guard frame.kind == HTTP2FrameKind.continuation.rawValue, frame.streamID == partial.streamID else {
        throw HTTP2ConnectionError(.protocolError, "a header block was interrupted by another frame")
      }
    }
    guard let kind = HTTP2FrameKind(rawValue: frame.kind) else { return }  // unknown types are ignored (§5.5)
    switch kind {
    case .data: try readData(frame)
    case .headers: try readHeaders(frame)
    case .continuation: try readContinuation(frame)
    case .rstStream: try readReset(frame)
    case .settings: try readSettings(frame)
    case .ping: try readPing(frame)
    case .goAway: try readGoAway(frame)
    case .windowUpdate: try readWindowUpdate(frame)
    case .priority:
      guard frame.streamID != .rootStream, frame.payload.readableBytes == 5 else {
        throw HTTP2ConnectionError(.protocolError, "malformed PRIORITY frame")
      }
    case .pushPromise:
      throw HTTP2ConnectionError(.protocolError, "PUSH_PROMISE is not accepted")
    }
  }

  private func readData(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID != .rootStream else { throw HTTP2ConnectionError(.protocolError, "DATA on stream 0") }
    let length = frame.payload.readableBytes
    inboundConnectionWindow -= length
    guard inboundConnectionWindow >= 0 else {
      throw HTTP2ConnectionError(.flowControlError, "DATA beyond the connection's window")
    }
    if inboundConnectionWindow <= configuration.windowSize / 2 {
      output.writeHTTP2Frame(
        kind: .windowUpdate, streamID: .rootStream, value: UInt32(configuration.windowSize - inboundConnectionWindow))
      inboundConnectionWindow = configuration.windowSize
      scheduleFlush()
    }
    let (data, padding) = try unpadded(frame)
    guard var stream = streams[frame.streamID] else {
      try checkNotIdle(frame.streamID, "DATA")
      return  // a stream already closed or reset: its late frames are dropped
    }
    guard !stream.remoteEnded else {
      reset(frame.streamID, .streamClosed, notifying: true)
      return
    }
    stream.inboundWindow -= length
    guard stream.inboundWindow >= 0 else {
      reset(frame.streamID, .flowControlError, notifying: true)
      return
    }
    let endStream = frame.has(HTTP2FrameFlag.endStream)
    stream.remoteEnded = endStream
    streams[frame.streamID] = stream
    // The padding counts in the window the delegate gives back (``ForwardingWindow``).
    delegate?.received(.data(.init(data: .byteBuffer(data), endStream: endStream, paddingBytes: padding)), on: frame.streamID)
    if endStream { closeIfEnded(frame.streamID) }
  }

  private func readHeaders(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID != .rootStream else { throw HTTP2ConnectionError(.protocolError, "HEADERS on stream 0") }
    var (block, _) = try unpadded(frame)
    if frame.has(HTTP2FrameFlag.priority) {
      guard block.readableBytes >= 5 else { throw HTTP2ConnectionError(.frameSizeError, "HEADERS too short for its priority") }
      block.moveReaderIndex(forwardBy: 5)
    }
    let endStream = frame.has(HTTP2FrameFlag.endStream)
    guard frame.has(HTTP2FrameFlag.endHeaders) else {
      partialHeaders = PartialHeaderBlock(streamID: frame.streamID, endStream: endStream, block: block)
      return
    }
    try receivedHeaderBlock(&block, on: frame.streamID, endStream: endStream)
  }

  private func readContinuation(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard var partial = partialHeaders else {
      throw HTTP2ConnectionError(.protocolError, "CONTINUATION without a header block to continue")
    }
    var fragment = frame.payload
    partial.block.writeBuffer(&fragment)
    guard partial.block.readableBytes <= 2 * configuration.maxHeaderListSize else {
      throw HTTP2ConnectionError(.enhanceYourCalm, "a header block of over \(2 * configuration.maxHeaderListSize) bytes")
    }
    guard frame.has(HTTP2FrameFlag.endHeaders) else {
      partialHeaders = partial
      return
    }
    partialHeaders = nil
    try receivedHeaderBlock(&partial.block, on: partial.streamID, endStream: partial.endStream)
  }

  private func receivedHeaderBlock(
    _ block: inout ByteBuffer, on streamID: HTTP2StreamID, endStream: Bool
  ) throws(HTTP2ConnectionError) {
    // Every block is decoded, even one that is dropped: HPACK's table depends on it.
    let headers: HPACKHeaders
    do {
      headers = try decoder.decode(&block)
    } catch {
      switch error {
      case .malformed(let reason):
        throw HTTP2ConnectionError(.compressionError, "header block: \(reason)")
      case .tooLarge:
        // Refused, the connection goes on: the block was decoded, so HPACK's table is in step.
        if mode == .server && streamID > lastPeerStreamID { lastPeerStreamID = streamID }
        reset(streamID, .protocolError, notifying: true)
        return
      }
    }
    let payload = HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: endStream))
    if var stream = streams[streamID] {
      guard !stream.remoteEnded else {
        reset(streamID, .streamClosed, notifying: true)
        return
      }
      stream.remoteEnded = endStream
      streams[streamID] = stream
      delegate?.received(payload, on: streamID)
      if endStream { closeIfEnded(streamID) }
      return
    }
    guard mode == .server, streamID.isClientInitiated, streamID > lastPeerStreamID else {
      try checkNotIdle(streamID, "HEADERS")
      return  // a stream already closed or reset
    }
    lastPeerStreamID = streamID
    guard !goAwaySent, streams.count < configuration.maxConcurrentStreams else {
      writeReset(streamID, .refusedStream)
      return
    }
    var stream = HTTP2StreamState(outboundWindow: peerInitialWindow, inboundWindow: configuration.windowSize)
    stream.remoteEnded = endStream
    streams[streamID] = stream
    delegate?.received(payload, on: streamID)
  }

  private func readReset(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard frame.streamID != .rootStream, payload.readableBytes == 4, let code = payload.readInteger(as: UInt32.self) else {
      throw HTTP2ConnectionError(.protocolError, "malformed RST_STREAM frame")
    }
    guard remove(frame.streamID) else {
      try checkNotIdle(frame.streamID, "RST_STREAM")
      return
    }
    delegate?.streamClosed(frame.streamID, reason: HTTP2ErrorCode(networkCode: Int(code)))
  }

  private func readSettings(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard frame.streamID == .rootStream else { throw HTTP2ConnectionError(.protocolError, "SETTINGS on a stream") }
    if frame.has(HTTP2FrameFlag.ack) {
      guard payload.readableBytes == 0 else { throw HTTP2ConnectionError(.frameSizeError, "SETTINGS ACK with a payload") }
      return
    }
    guard payload.readableBytes % 6 == 0 else { throw HTTP2ConnectionError(.frameSizeError, "malformed SETTINGS frame") }
    while let parameter = payload.readInteger(as: UInt16.self), let raw = payload.readInteger(as: UInt32.self) {
      let value = Int(raw)
      switch parameter {
      case 0x2:
        guard value <= 1 else { throw HTTP2ConnectionError(.protocolError, "SETTINGS_ENABLE_PUSH of \(value)") }
      case 0x3:
        peerMaxConcurrentStreams = value
      case 0x4:
        guard value <= HTTP2Protocol.maxWindow else {
          throw HTTP2ConnectionError(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE of \(value)")
        }
        let change = value - peerInitialWindow
        peerInitialWindow = value
        let ids = streams.ids
        for id in ids { streams[id]!.outboundWindow += change }
        if change > 0 { writeWaitingFrames(of: ids) }
      case 0x5:
        guard (HTTP2Protocol.defaultMaxFrameSize...HTTP2Protocol.maxFrameSizeLimit).contains(value) else {
          throw HTTP2ConnectionError(.protocolError, "SETTINGS_MAX_FRAME_SIZE of \(value)")
        }
        peerMaxFrameSize = value
      default:
        break  // HEADER_TABLE_SIZE: the encoder keeps no table; MAX_HEADER_LIST_SIZE is advisory
      }
    }
    output.writeHTTP2FrameHeader(length: 0, kind: .settings, flags: HTTP2FrameFlag.ack, streamID: .rootStream)
    scheduleFlush()
  }

  private func readPing(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID == .rootStream, frame.payload.readableBytes == 8 else {
      throw HTTP2ConnectionError(.frameSizeError, "malformed PING frame")
    }
    if frame.has(HTTP2FrameFlag.ack) {
      delegate?.receivedPingAck(HTTP2PingData(withInteger: frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt64.self)!))
      return
    }
    var payload = frame.payload
    output.writeHTTP2FrameHeader(length: 8, kind: .ping, flags: HTTP2FrameFlag.ack, streamID: .rootStream)
    output.writeBuffer(&payload)
    scheduleFlush()
  }

  private func readGoAway(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard frame.streamID == .rootStream, let last = payload.readInteger(as: UInt32.self),
      let code = payload.readInteger(as: UInt32.self)
    else { throw HTTP2ConnectionError(.frameSizeError, "malformed GOAWAY frame") }
    goAwayReceived = true
    let lastStreamID = HTTP2StreamID(Int32(bitPattern: last & 0x7FFF_FFFF))
    if mode == .client {
      for id in streams.ids where id > lastStreamID { remove(id) }
    }
    delegate?.receivedGoAway(lastStreamID: lastStreamID, errorCode: HTTP2ErrorCode(networkCode: Int(code)))
  }

  private func readWindowUpdate(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard payload.readableBytes == 4, let raw = payload.readInteger(as: UInt32.self) else {
      throw HTTP2ConnectionError(.frameSizeError, "malformed WINDOW_UPDATE frame")
    }
    let increment = Int(raw & 0x7FFF_FFFF)
    guard frame.streamID != .rootStream else {
      guard increment > 0 else { throw HTTP2ConnectionError(.protocolError, "WINDOW_UPDATE of 0 for the connection") }
      outboundConnectionWindow += increment
      guard outboundConnectionWindow <= HTTP2Protocol.maxWindow else {
        throw HTTP2ConnectionError(.flowControlError, "the connection's window over 2^31-1")
      }
      let blocked = blockedStreams
      blockedStreams.removeAll(keepingCapacity: true)
      writeWaitingFrames(of: blocked)
      return
    }
    guard var stream = streams[frame.streamID] else { return }
    stream.outboundWindow += increment
    guard increment > 0, stream.outboundWindow <= HTTP2Protocol.maxWindow else {
      reset(frame.streamID, increment > 0 ? .flowControlError : .protocolError, notifying: true)
      return
    }
    streams[frame.streamID] = stream
    if !stream.waiting.isEmpty { writeWaitingFrames(of: [frame.streamID]) }
  }

  /// A frame's payload without its padding, and the padding's length if it has some
  /// (RFC 9113 §6.1).
  private func unpadded(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) -> (ByteBuffer, Int?) {
    guard frame.has(HTTP2FrameFlag.padded) else { return (frame.payload, nil) }
    var payload = frame.payload
    guard let padding = payload.readInteger(as: UInt8.self), Int(padding) <= payload.readableBytes else {
      throw HTTP2ConnectionError(.protocolError, "padding longer than its frame")
    }
    return (payload.readSlice(length: payload.readableBytes - Int(padding))!, Int(padding))
  }

  /// A frame on a stream that was never opened is a connection error (RFC 9113 §5.1, idle).
  private func checkNotIdle(_ streamID: HTTP2StreamID, _ kind: String) throws(HTTP2ConnectionError) {
    let idle =
      switch mode {
      case .client: streamID.isServerInitiated || streamID >= nextStreamID
      case .server: streamID.isServerInitiated || streamID > lastPeerStreamID
      }
    if idle { throw HTTP2ConnectionError(.protocolError, "\(kind) on stream \(streamID), which was never opened") }
  }

  // MARK: Writing

  /// Opens a stream (client): its ID, for the HEADERS the caller writes next; `nil` when
  /// ``acceptsStreams`` is false or the connection is at capacity.
  func openStream() -> HTTP2StreamID? {
    guard mode == .client, acceptsStreams, !isAtCapacity else { return nil }
    let id = nextStreamID
    nextStreamID = id.advanced(by: 2)
    streams[id] = HTTP2StreamState(outboundWindow: peerInitialWindow, inboundWindow: configuration.windowSize)
    return id
  }

  /// Writes `payload` on stream `streamID` (flushed once the current tick's work is done);
  /// `promise` completes once it is written, and fails when the stream or the connection is gone
  /// first. HEADERS, DATA, RST_STREAM and WINDOW_UPDATE go on a stream; GOAWAY and PING on the
  /// root stream.
  func write(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID, promise: EventLoopPromise<Void>? = nil) {
    guard context != nil else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    switch payload {
    case .headers, .data:
      guard var stream = streams[streamID], !stream.localEnded else {
        promise?.fail(ChannelError.ioOnClosedChannel)
        return
      }
      let endStream: Bool
      switch payload {
      case .headers(let headers): endStream = headers.endStream
      case .data(let data): endStream = data.endStream
      default: endStream = false
      }
      stream.localEnded = endStream
      guard stream.waiting.isEmpty else {
        stream.waiting.append(.init(payload: payload, promise: promise))
        streams[streamID] = stream
        return
      }
      streams[streamID] = stream
      writeOrWait(payload, on: streamID, promise: promise)
      if endStream { closeIfEnded(streamID) }
    case .rstStream(let code):
      remove(streamID)
      writeReset(streamID, code)
      keep(promise)
    case .windowUpdate(let increment):
      if streamID != .rootStream {
        guard streams[streamID] != nil else {
          promise?.succeed()
          return
        }
        streams[streamID]!.inboundWindow += increment
      }
      output.writeHTTP2Frame(kind: .windowUpdate, streamID: streamID, value: UInt32(increment))
      keep(promise)
      scheduleFlush()
    case .goAway(let lastStreamID, let code, let opaqueData):
      goAwaySent = true
      writeGoAway(lastStreamID: lastStreamID, code: code, debugData: opaqueData)
      keep(promise)
    case .ping(let data, let ack):
      output.writeHTTP2FrameHeader(length: 8, kind: .ping, flags: ack ? HTTP2FrameFlag.ack : 0, streamID: .rootStream)
      output.writeInteger(data.integer)
      keep(promise)
      scheduleFlush()
    default:
      promise?.fail(ChannelError.operationUnsupported)
    }
  }

  /// Closes the connection after this tick's frames are written.
  func close() {
    guard let context else { return }
    flush()
    context.close(promise: nil)
  }

  /// Writes HEADERS at once, and DATA as far as both windows allow; the rest waits.
  private func writeOrWait(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID, promise: EventLoopPromise<Void>?) {
    switch payload {
    case .headers(let headers):
      writeHeaders(headers, on: streamID)
      keep(promise)
    case .data(let data):
      guard case .byteBuffer(var bytes) = data.data else {
        promise?.fail(ChannelError.operationUnsupported)
        return
      }
      let allowed = min(outboundConnectionWindow, streams[streamID]!.outboundWindow)
      if bytes.readableBytes <= allowed {
        writeData(&bytes, endStream: data.endStream, on: streamID)
        keep(promise)
        return
      }
      // Part of it now (the windows' worth), the rest when the peer gives window back.
      if allowed > 0 {
        var now = bytes.readSlice(length: allowed)!
        writeData(&now, endStream: false, on: streamID)
      }
      let rest = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(bytes), endStream: data.endStream))
      streams[streamID]!.waiting.append(.init(payload: rest, promise: promise))
      if outboundConnectionWindow == 0 && !blockedStreams.contains(streamID) { blockedStreams.append(streamID) }
    default:
      break
    }
  }

  /// Writes the waiting frames of `ids` that the windows now allow, in order.
  private func writeWaitingFrames(of ids: [HTTP2StreamID]) {
    for id in ids {
      guard let waiting = streams[id]?.waiting, !waiting.isEmpty else { continue }
      streams[id]!.waiting = []
      for (index, frame) in waiting.enumerated() {
        guard let stream = streams[id] else {
          frame.promise?.fail(ChannelError.ioOnClosedChannel)  // reset meanwhile
          continue
        }
        guard stream.waiting.isEmpty else {
          streams[id]!.waiting.append(contentsOf: waiting[index...])
          break
        }
        writeOrWait(frame.payload, on: id, promise: frame.promise)
      }
      closeIfEnded(id)
    }
  }

  /// Completes `promise` once the frame just encoded is written.
  private func keep(_ promise: EventLoopPromise<Void>?) {
    if let promise { outputPromises.append(promise) }
  }

  /// Encodes DATA, in frames no larger than the peer takes, and spends the windows.
  private func writeData(_ bytes: inout ByteBuffer, endStream: Bool, on streamID: HTTP2StreamID) {
    let length = bytes.readableBytes
    outboundConnectionWindow -= length
    streams[streamID]!.outboundWindow -= length
    repeat {
      var chunk = bytes.readSlice(length: min(bytes.readableBytes, peerMaxFrameSize))!
      let last = bytes.readableBytes == 0
      output.writeHTTP2FrameHeader(
        length: chunk.readableBytes, kind: .data, flags: last && endStream ? HTTP2FrameFlag.endStream : 0,
        streamID: streamID)
      if chunk.readableBytes <= Self.copiedDataLimit {
        output.writeBuffer(&chunk)
      } else {
        // Large payloads are written as they are, after the frames before them.
        emitOutput()
        context?.write(wrapOutboundOut(chunk), promise: nil)
      }
    } while bytes.readableBytes > 0
    scheduleFlush()
  }

  /// DATA payloads up to this size are copied into the tick's buffer; larger ones are written
  /// as their own buffers.
  private static let copiedDataLimit = 4096

  /// Encodes a header block: one HEADERS frame, and CONTINUATION frames when it is larger than
  /// the peer's frame size.
  private func writeHeaders(_ headers: HTTP2Frame.FramePayload.Headers, on streamID: HTTP2StreamID) {
    let start = output.writerIndex
    let flags = HTTP2FrameFlag.endHeaders | (headers.endStream ? HTTP2FrameFlag.endStream : 0)
    output.writeHTTP2FrameHeader(length: 0, kind: .headers, flags: flags, streamID: streamID)
    HeaderBlockEncoder.encode(headers.headers, to: &output)
    let length = output.writerIndex - start - HTTP2Protocol.frameHeaderLength
    guard length > peerMaxFrameSize else {
      output.setHTTP2FrameLength(length, at: start)
      scheduleFlush()
      return
    }
    var block = output.getSlice(at: start + HTTP2Protocol.frameHeaderLength, length: length)!
    output.moveWriterIndex(to: start)
    var kind = HTTP2FrameKind.headers
    while block.readableBytes > 0 {
      var chunk = block.readSlice(length: min(block.readableBytes, peerMaxFrameSize))!
      var chunkFlags: UInt8 = block.readableBytes == 0 ? HTTP2FrameFlag.endHeaders : 0
      if kind == .headers && headers.endStream { chunkFlags |= HTTP2FrameFlag.endStream }
      output.writeHTTP2FrameHeader(length: chunk.readableBytes, kind: kind, flags: chunkFlags, streamID: streamID)
      output.writeBuffer(&chunk)
      kind = .continuation
    }
    scheduleFlush()
  }

  private func writeReset(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode) {
    output.writeHTTP2Frame(kind: .rstStream, streamID: streamID, value: UInt32(code.networkCode))
    scheduleFlush()
  }

  private func writeGoAway(lastStreamID: HTTP2StreamID, code: HTTP2ErrorCode, debugData: ByteBuffer?) {
    var debug = debugData ?? ByteBuffer()
    output.writeHTTP2FrameHeader(length: 8 + debug.readableBytes, kind: .goAway, streamID: .rootStream)
    output.writeInteger(UInt32(Int32(lastStreamID)))
    output.writeInteger(UInt32(code.networkCode))
    output.writeBuffer(&debug)
    scheduleFlush()
  }

  // MARK: Streams ending

  /// Forgets a stream both sides have ended and tells the delegate.
  private func closeIfEnded(_ streamID: HTTP2StreamID) {
    guard let stream = streams[streamID], stream.localEnded, stream.remoteEnded, stream.waiting.isEmpty else { return }
    streams.removeValue(forKey: streamID)
    delegate?.streamClosed(streamID, reason: nil)
  }

  /// Resets a stream with `code`; `notifying` tells the delegate the stream is gone.
  private func reset(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode, notifying: Bool) {
    let wasOpen = remove(streamID)
    writeReset(streamID, code)
    if notifying && wasOpen { delegate?.streamClosed(streamID, reason: code) }
  }

  /// Forgets a stream, failing the frames that wait on it; whether it was open.
  @discardableResult
  private func remove(_ streamID: HTTP2StreamID) -> Bool {
    guard let stream = streams.removeValue(forKey: streamID) else { return false }
    for frame in stream.waiting { frame.promise?.fail(ChannelError.ioOnClosedChannel) }
    return true
  }

  private func failWaitingFrames() {
    for id in streams.ids {
      for frame in streams[id]!.waiting { frame.promise?.fail(ChannelError.ioOnClosedChannel) }
    }
  }

  /// Ends the connection for a protocol violation: GOAWAY with its code, then close.
  private func fail(_ error: HTTP2ConnectionError) {
    guard let context, !failed else { return }
    failed = true
    writeGoAway(lastStreamID: lastPeerStreamID, code: error.code, debugData: nil)
    delegate?.connectionFailed(error.description)
    flush()
    context.close(promise: nil)
  }

  // MARK: Flushing

  private func scheduleFlush() {
    guard !flushScheduled, let context else { return }
    flushScheduled = true
    context.eventLoop.assumeIsolated().execute { [self] in
      flushScheduled = false
      flush()
    }
  }

  /// Writes what this tick encoded and flushes.
  private func flush() {
    guard let context else { return }
    emitOutput()
    context.flush()
  }

  /// Writes the tick's buffer (without flushing) and completes its promises once it is written.
  private func emitOutput() {
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
