import NIOCore
import NIOHPACK
import NIOHTTP2

/// Reading: frames from the peer, checked against RFC 9113 and handed to the delegate.
extension HTTP2Connection {
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

  func handle(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
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
    case .rstStream: try readReset(frame)
    case .settings:
      try countControlFrame()
      try readSettings(frame)
    case .ping:
      try countControlFrame()
      try readPing(frame)
    case .goAway: try readGoAway(frame)
    case .windowUpdate: try readWindowUpdate(frame)
    case .priority:
      try countControlFrame()
      guard frame.streamID != .rootStream, frame.payload.readableBytes == 5 else {
        throw HTTP2ConnectionError(.protocolError, "malformed PRIORITY frame")
      }
    case .pushPromise:
      throw HTTP2ConnectionError(.protocolError, "PUSH_PROMISE is not accepted")
    }
  }

  private func countControlFrame() throws(HTTP2ConnectionError) {
    if let violation = guards.control(now: .now()) { throw HTTP2ConnectionError(violation, limits: guards.limits) }
  }

  func readData(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
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
    // An empty DATA frame that does not end the stream carries nothing: not passed on.
    if length == 0 && !endStream { return }
    // The padding counts in the window the delegate gives back (``ForwardingWindow``).
    delegate?.received(.data(.init(data: .byteBuffer(data), endStream: endStream, paddingBytes: padding)), on: frame.streamID)
    if endStream { closeIfEnded(frame.streamID) }
  }

  func readHeaders(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
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

  func readContinuation(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
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

  func receivedHeaderBlock(
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
        delegate?.refusedRequest(on: streamID, problem)
        try streamError(streamID, .protocolError)
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
    guard !goAwaySent else {
      writeReset(streamID, .refusedStream)
      return
    }
    guard streams.count < configuration.maxConcurrentStreams else {
      try streamError(streamID, .refusedStream)  // over the SETTINGS_MAX_CONCURRENT_STREAMS announced
      return
    }
    if let problem = RequestHeaderCheck.request(headers) {
      delegate?.refusedRequest(on: streamID, problem)
      try streamError(streamID, .protocolError)
      return
    }
    var stream = newStream(opened: true)
    stream.remoteEnded = endStream
    streams[streamID] = stream
    delegate?.received(payload, on: streamID)
  }

  func readReset(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard frame.streamID != .rootStream else { throw HTTP2ConnectionError(.protocolError, "RST_STREAM on stream 0") }
    guard payload.readableBytes == 4, let code = payload.readInteger(as: UInt32.self) else {
      throw HTTP2ConnectionError(.frameSizeError, "malformed RST_STREAM frame")
    }
    if let violation = guards.reset(now: .now()) { throw HTTP2ConnectionError(violation, limits: guards.limits) }
    guard remove(frame.streamID) else {
      try checkNotIdle(frame.streamID, "RST_STREAM")
      return
    }
    delegate?.streamClosed(frame.streamID, reason: HTTP2ErrorCode(networkCode: Int(code)))
  }

  func readSettings(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard frame.streamID == .rootStream else { throw HTTP2ConnectionError(.protocolError, "SETTINGS on a stream") }
    guard peerSettingsReceived || !frame.has(HTTP2FrameFlag.ack) else {
      throw HTTP2ConnectionError(.protocolError, "the peer's first SETTINGS is an acknowledgement (§3.4)")
    }
    peerSettingsReceived = true
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
        for id in ids {
          streams[id]!.outboundWindow += change
          // RFC 9113 §6.9.2: a change that pushes a window past 2^31-1 is a connection error.
          guard streams[id]!.outboundWindow <= HTTP2Protocol.maxWindow else {
            throw HTTP2ConnectionError(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE pushes a stream's window past 2^31-1")
          }
        }
        if change > 0 {
          for id in ids { streams[id]!.stalledSince = nil }
          writeWaitingFrames(of: ids)
        }
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

  func readPing(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID == .rootStream else { throw HTTP2ConnectionError(.protocolError, "PING on a stream") }
    guard frame.payload.readableBytes == 8 else { throw HTTP2ConnectionError(.frameSizeError, "malformed PING frame") }
    if frame.has(HTTP2FrameFlag.ack) {
      delegate?.receivedPingAck(HTTP2PingData(withInteger: frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt64.self)!))
      return
    }
    var payload = frame.payload
    output.writeHTTP2FrameHeader(length: 8, kind: .ping, flags: HTTP2FrameFlag.ack, streamID: .rootStream)
    output.writeBuffer(&payload)
    scheduleFlush()
  }

  func readGoAway(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard frame.streamID == .rootStream else { throw HTTP2ConnectionError(.protocolError, "GOAWAY on a stream") }
    guard let last = payload.readInteger(as: UInt32.self), let code = payload.readInteger(as: UInt32.self) else {
      throw HTTP2ConnectionError(.frameSizeError, "malformed GOAWAY frame")
    }
    goAwayReceived = true
    let lastStreamID = HTTP2StreamID(Int32(bitPattern: last & 0x7FFF_FFFF))
    if mode == .client {
      for id in streams.ids where id > lastStreamID { remove(id) }
    }
    delegate?.receivedGoAway(lastStreamID: lastStreamID, errorCode: HTTP2ErrorCode(networkCode: Int(code)))
  }

  func readWindowUpdate(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard payload.readableBytes == 4, let raw = payload.readInteger(as: UInt32.self) else {
      throw HTTP2ConnectionError(.frameSizeError, "malformed WINDOW_UPDATE frame")
    }
    let increment = Int(raw & 0x7FFF_FFFF)
    guard frame.streamID != .rootStream else {
      guard increment > 0 else { throw HTTP2ConnectionError(.protocolError, "WINDOW_UPDATE of 0 for the connection") }
      guards.grantedWindow()
      outboundConnectionWindow += increment
      guard outboundConnectionWindow <= HTTP2Protocol.maxWindow else {
        throw HTTP2ConnectionError(.flowControlError, "the connection's window over 2^31-1")
      }
      let blocked = blockedStreams
      blockedStreams.removeAll(keepingCapacity: true)
      writeWaitingFrames(of: blocked)
      return
    }
    guard var stream = streams[frame.streamID] else {
      try checkNotIdle(frame.streamID, "WINDOW_UPDATE")
      return  // a stream already closed: late updates are dropped
    }
    stream.outboundWindow += increment
    if increment > 0 { stream.stalledSince = nil }
    guard increment > 0, stream.outboundWindow <= HTTP2Protocol.maxWindow else {
      try streamError(frame.streamID, increment > 0 ? .flowControlError : .protocolError)
      return
    }
    streams[frame.streamID] = stream
    if !stream.waiting.isEmpty { writeWaitingFrames(of: [frame.streamID]) }
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
    let idle =
      switch mode {
      case .client: streamID.isServerInitiated || streamID >= nextStreamID
      case .server: streamID.isServerInitiated || streamID > lastPeerStreamID
      }
    if idle { throw HTTP2ConnectionError(.protocolError, "\(kind) on stream \(streamID), which was never opened") }
  }
}
