import NIOCore
import NIOHTTP2

/// Reading the peer's frames other than a stream's HEADERS and DATA: RST_STREAM, SETTINGS, PING,
/// GOAWAY, WINDOW_UPDATE and PRIORITY.
extension HTTP2ConnectionState {
  mutating func readReset(_ frame: HTTP2FrameReader.Frame, now: NIODeadline) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard frame.streamID != .rootStream else { throw HTTP2ConnectionError(.protocolError, "RST_STREAM on stream 0") }
    guard payload.readableBytes == 4, let code = payload.readInteger(as: UInt32.self) else {
      throw HTTP2ConnectionError(.frameSizeError, "malformed RST_STREAM frame")
    }
    if let violation = guards.reset(now: now) { throw HTTP2ConnectionError(violation, limits: guards.limits) }
    guard remove(frame.streamID) else {
      try checkNotIdle(frame.streamID, "RST_STREAM")
      return
    }
    effects.append(.streamClosed(frame.streamID, reason: HTTP2ErrorCode(networkCode: Int(code))))
  }

  mutating func readSettings(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
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
        try changePeerInitialWindow(to: value)
      case 0x5:
        guard (HTTP2Protocol.defaultMaxFrameSize...HTTP2Protocol.maxFrameSizeLimit).contains(value) else {
          throw HTTP2ConnectionError(.protocolError, "SETTINGS_MAX_FRAME_SIZE of \(value)")
        }
        peerMaxFrameSize = value
      case 0x6:
        peerMaxHeaderListSize = value  // held to by whoever writes the headers (a call: before it is sent)
      default:
        break  // HEADER_TABLE_SIZE: the encoder keeps no table
      }
    }
    output.writeHTTP2FrameHeader(length: 0, kind: .settings, flags: HTTP2FrameFlag.ack, streamID: .rootStream)
  }

  /// SETTINGS_INITIAL_WINDOW_SIZE: every open stream's window moves by the change (§6.9.2).
  private mutating func changePeerInitialWindow(to value: Int) throws(HTTP2ConnectionError) {
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
  }

  mutating func readPing(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID == .rootStream else { throw HTTP2ConnectionError(.protocolError, "PING on a stream") }
    guard frame.payload.readableBytes == 8 else { throw HTTP2ConnectionError(.frameSizeError, "malformed PING frame") }
    if frame.has(HTTP2FrameFlag.ack) {
      let data = HTTP2PingData(withInteger: frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt64.self)!)
      effects.append(.receivedPingAck(data))
      return
    }
    var payload = frame.payload
    output.writeHTTP2FrameHeader(length: 8, kind: .ping, flags: HTTP2FrameFlag.ack, streamID: .rootStream)
    output.writeBuffer(&payload)
  }

  mutating func readGoAway(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
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
    effects.append(.receivedGoAway(lastStreamID: lastStreamID, errorCode: HTTP2ErrorCode(networkCode: Int(code))))
  }

  /// WINDOW_UPDATE. One that grants window while nothing waits for it counts against the
  /// control-frame budget, as PING and SETTINGS do: a peer that grants window as it reads never
  /// comes near it, and a flood of +1 updates ends with GOAWAY `ENHANCE_YOUR_CALM`.
  mutating func readWindowUpdate(_ frame: HTTP2FrameReader.Frame, now: NIODeadline) throws(HTTP2ConnectionError) {
    var payload = frame.payload
    guard payload.readableBytes == 4, let raw = payload.readInteger(as: UInt32.self) else {
      throw HTTP2ConnectionError(.frameSizeError, "malformed WINDOW_UPDATE frame")
    }
    let increment = Int(raw & 0x7FFF_FFFF)
    guard frame.streamID != .rootStream else {
      guard increment > 0 else { throw HTTP2ConnectionError(.protocolError, "WINDOW_UPDATE of 0 for the connection") }
      if blockedStreams.isEmpty { try countControlFrame(now: now) }
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
      try countControlFrame(now: now)
      return  // a stream already closed: late updates are dropped
    }
    if stream.waiting.isEmpty { try countControlFrame(now: now) }
    stream.outboundWindow += increment
    if increment > 0 { stream.stalledSince = nil }
    guard increment > 0, stream.outboundWindow <= HTTP2Protocol.maxWindow else {
      try streamError(frame.streamID, increment > 0 ? .flowControlError : .protocolError)
      return
    }
    streams[frame.streamID] = stream
    if !stream.waiting.isEmpty { writeWaitingFrames(of: [frame.streamID]) }
  }

  /// PRIORITY is read and ignored (RFC 9113 §5.3.2); one of the wrong size is a stream error
  /// (§6.3), so the connection goes on.
  mutating func readPriority(_ frame: HTTP2FrameReader.Frame) throws(HTTP2ConnectionError) {
    guard frame.streamID != .rootStream else { throw HTTP2ConnectionError(.protocolError, "PRIORITY on stream 0") }
    guard frame.payload.readableBytes == 5 else {
      if mode == .server && frame.streamID.isClientInitiated && frame.streamID > lastPeerStreamID {
        lastPeerStreamID = frame.streamID  // the stream is closed by the reset: never opened later
      }
      try streamError(frame.streamID, .frameSizeError)
      return
    }
  }
}
