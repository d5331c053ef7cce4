import NIOCore
import NIOHPACK
import NIOHTTP2

/// Reading: a peer's frame, checked against RFC 9113; the streams' frames go to ``effects``.
extension HTTP2ConnectionState {
  /// Reads one frame from the peer. A thrown error ends the connection (``fail(_:)``).
  mutating func read(_ frame: HTTP2FrameReader.Frame, now: NIODeadline) throws(HTTP2ConnectionError) {
    if let partial = partialHeaders {
      guard frame.kind == HTTP2FrameKind.continuation.rawValue, frame.streamID == partial.streamID else {
        throw HTTP2ConnectionError(.protocolError, "a header block was interrupted by another frame")
      }
    }
    guard peerSettingsReceived || frame.kind == HTTP2FrameKind.settings.rawValue else {
      throw HTTP2ConnectionError(.protocolError, "the peer's first frame is not SETTINGS (§3.4)")
    }
    guard let kind = HTTP2FrameKind(rawValue: frame.kind) else { return }  // unknown types are ignored (§5.5)
    switch kind {
    case .data: try readData(frame)
    case .headers: try readHeaders(frame)
    case .continuation: try readContinuation(frame)
    case .rstStream: try readReset(frame, now: now)
    case .settings:
      try countControlFrame(now: now)
      try readSettings(frame)
    case .ping:
      try countControlFrame(now: now)
      try readPing(frame)
    case .goAway: try readGoAway(frame)
    case .windowUpdate: try readWindowUpdate(frame, now: now)
    case .priority:
      try countControlFrame(now: now)
      try readPriority(frame)
    case .pushPromise:
      throw HTTP2ConnectionError(.protocolError, "PUSH_PROMISE is not accepted")
    }
  }

  /// Counts a frame against the control-frame budget (``HTTP2Guards/control(now:)``).
  mutating func countControlFrame(now: NIODeadline) throws(HTTP2ConnectionError) {
    if let violation = guards.control(now: now) { throw HTTP2ConnectionError(violation, limits: guards.limits) }
  }

  mutating func readData(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID != .rootStream else { throw HTTP2ConnectionError(.protocolError, "DATA on stream 0") }
    let length = frame.payload.readableBytes
    inboundConnectionWindow -= length
    guard inboundConnectionWindow >= 0 else {
      throw HTTP2ConnectionError(.flowControlError, "DATA beyond the connection's window")
    }
    defer { returnConnectionWindowIfDue() }
    let endStream = frame.has(HTTP2FrameFlag.endStream)
    if let violation = guards.data(length: length, endStream: endStream) {
      throw HTTP2ConnectionError(violation, limits: guards.limits)
    }
    let (data, padding) = try unpadded(frame)
    guard var stream = streams[frame.streamID] else {
      try checkNotIdle(frame.streamID, "DATA")
      return  // a stream already closed or reset: its late frames are dropped
    }
    guard !stream.remoteEnded else {
      try streamError(frame.streamID, .streamClosed)
      return
    }
    stream.inboundWindow -= length
    guard stream.inboundWindow >= 0 else {
      try streamError(frame.streamID, .flowControlError)
      return
    }
    stream.remoteEnded = endStream
    streams[frame.streamID] = stream
    bufferedBytes += length
    if brokeContentLength(frame.streamID, bytes: data.readableBytes, endStream: endStream) {
      effects.append(.refusedRequest(frame.streamID, problem: "DATA other than its content-length", reason: .contentLength))
      try streamError(frame.streamID, .protocolError)  // what the stream held goes back with it
      return
    }
    // An empty DATA frame that does not end the stream carries nothing: not passed on.
    if length == 0 && !endStream { return }
    // The padding counts in the window the delegate gives back (``ForwardingWindow``).
    effects.append(.received(.data(.init(data: .byteBuffer(data), endStream: endStream, paddingBytes: padding)), on: frame.streamID))
    if endStream { closeIfEnded(frame.streamID) }
  }

  /// Gives the connection's window back once half of it is read, unless the connection holds
  /// more than ``Configuration/maxBufferedBytes`` (then once it holds less).
  mutating func returnConnectionWindowIfDue() {
    guard inboundConnectionWindow <= configuration.windowSize / 2 else { return }
    if let limit = configuration.maxBufferedBytes, bufferedBytes > limit { return }
    output.writeHTTP2Frame(
      kind: .windowUpdate, streamID: .rootStream, value: UInt32(configuration.windowSize - inboundConnectionWindow))
    inboundConnectionWindow = configuration.windowSize
  }

  /// `bytes` of the peer's DATA are no longer held: given back, or their stream is gone.
  mutating func released(_ bytes: Int) {
    guard bytes > 0 else { return }
    bufferedBytes -= bytes
    returnConnectionWindowIfDue()
  }

  mutating func readHeaders(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID != .rootStream else { throw HTTP2ConnectionError(.protocolError, "HEADERS on stream 0") }
    var (block, _) = try unpadded(frame)
    if frame.has(HTTP2FrameFlag.priority) {
      guard block.readableBytes >= 5 else { throw HTTP2ConnectionError(.frameSizeError, "HEADERS too short for its priority") }
      block.moveReaderIndex(forwardBy: 5)
    }
    let endStream = frame.has(HTTP2FrameFlag.endStream)
    guard frame.has(HTTP2FrameFlag.endHeaders) else {
      partialHeaders = PartialHeaderBlock(streamID: frame.streamID, endStream: endStream, block: block)
      guards.headerBlockStarted()
      return
    }
    try receivedHeaderBlock(&block, on: frame.streamID, endStream: endStream)
  }

  mutating func readContinuation(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard var partial = partialHeaders else {
      throw HTTP2ConnectionError(.protocolError, "CONTINUATION without a header block to continue")
    }
    if let violation = guards.continuation() { throw HTTP2ConnectionError(violation, limits: guards.limits) }
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

  mutating func receivedHeaderBlock(
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
      case .tooLarge, .invalidName:
        // Refused, the connection goes on: the block was decoded, so HPACK's table is in step.
        if mode == .server && streamID > lastPeerStreamID { lastPeerStreamID = streamID }
        if mode == .server, case .invalidName = error {
          effects.append(.refusedRequest(streamID, problem: "a field name that is not ASCII", reason: .malformed))
        }
        try streamError(streamID, .protocolError)
        return
      }
    }
    let payload = HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: endStream))
    if var stream = streams[streamID] {
      guard !stream.remoteEnded else {
        try streamError(streamID, .streamClosed)
        return
      }
      if mode == .server, let problem = RequestHeaderCheck.trailers(headers, endStream: endStream) {
        effects.append(.refusedRequest(streamID, problem: problem, reason: .malformed))
        try streamError(streamID, .protocolError)
        return
      }
      if brokeContentLength(streamID, bytes: 0, endStream: endStream) {
        effects.append(.refusedRequest(streamID, problem: "trailers before its content-length", reason: .contentLength))
        try streamError(streamID, .protocolError)
        return
      }
      stream.remoteEnded = endStream
      streams[streamID] = stream
      effects.append(.received(payload, on: streamID))
      if endStream { closeIfEnded(streamID) }
      return
    }
    guard mode == .server, streamID.isClientInitiated, streamID > lastPeerStreamID else {
      try checkNotIdle(streamID, "HEADERS")
      return  // a stream already closed or reset
    }
    lastPeerStreamID = streamID
    guard !goAwaySent else {
      writeReset(streamID, .refusedStream)
      return
    }
    guard streams.count < configuration.maxConcurrentStreams else {
      try streamError(streamID, .refusedStream)  // over the SETTINGS_MAX_CONCURRENT_STREAMS announced
      return
    }
    let contentLength: Int?
    switch RequestHeaderCheck.request(headers) {
    case .malformed(let problem):
      effects.append(.refusedRequest(streamID, problem: problem, reason: .malformed))
      try streamError(streamID, .protocolError)
      return
    case .answer(let answer):
      effects.append(.refusedRequest(streamID, problem: answer.problem, reason: answer.refusal))
      self.answer(answer, on: streamID, remoteEnded: endStream)
      return
    case .forward(let length):
      contentLength = length
    }
    if endStream, let contentLength, contentLength != 0 {
      effects.append(.refusedRequest(streamID, problem: "END_STREAM before its content-length", reason: .contentLength))
      try streamError(streamID, .protocolError)
      return
    }
    var stream = newStream(opened: true)
    stream.remoteEnded = endStream
    stream.contentLengthLeft = contentLength
    streams[streamID] = stream
    effects.append(.received(payload, on: streamID))
  }

  /// Answers a well-formed request that is not gRPC's with its HTTP status: the response is
  /// written at once, and the rest of the request, if any, is cut off (RST_STREAM `NO_ERROR`,
  /// RFC 9113 §8.1) and dropped.
  mutating func answer(_ answer: LocalAnswer, on streamID: HTTP2StreamID, remoteEnded: Bool) {
    var stream = newStream(opened: true)
    stream.remoteEnded = remoteEnded
    streams[streamID] = stream
    let (headers, body) = answer.response
    write(.headers(.init(headers: headers, endStream: body == nil)), on: streamID, promise: nil)
    if let body { write(.data(.init(data: .byteBuffer(body), endStream: true)), on: streamID, promise: nil) }
  }

  /// Counts a DATA frame's `bytes` (padding excluded) against the stream's `content-length`:
  /// whether the request is malformed (RFC 9113 §8.1.1), more or fewer bytes than it said.
  mutating func brokeContentLength(_ streamID: HTTP2StreamID, bytes: Int, endStream: Bool) -> Bool {
    guard let left = streams[streamID]?.contentLengthLeft else { return false }
    let now = left - bytes
    streams[streamID]!.contentLengthLeft = now
    return now < 0 || (endStream && now != 0)
  }

  /// A frame's payload without its padding, and the padding's length if it has some
  /// (RFC 9113 §6.1).
  func unpadded(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) -> (ByteBuffer, Int?) {
    guard frame.has(HTTP2FrameFlag.padded) else { return (frame.payload, nil) }
    var payload = frame.payload
    guard let padding = payload.readInteger(as: UInt8.self), Int(padding) <= payload.readableBytes else {
      throw HTTP2ConnectionError(.protocolError, "padding longer than its frame")
    }
    return (payload.readSlice(length: payload.readableBytes - Int(padding))!, Int(padding))
  }

  /// A frame on a stream that was never opened is a connection error (RFC 9113 §5.1, idle).
  func checkNotIdle(_ streamID: HTTP2StreamID, _ kind: String) throws(HTTP2ConnectionError) {
    if isIdle(streamID) { throw HTTP2ConnectionError(.protocolError, "\(kind) on stream \(streamID), which was never opened") }
  }

  /// Whether a stream was never opened (RFC 9113 §5.1, idle).
  func isIdle(_ streamID: HTTP2StreamID) -> Bool {
    switch mode {
    case .client: streamID.isServerInitiated || streamID >= nextStreamID
    case .server: streamID.isServerInitiated || streamID > lastPeerStreamID
    }
  }
}
