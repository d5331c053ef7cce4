import NIOCore
import NIOHPACK
import NIOHTTP2

/// Writing: this side's frames, encoded into ``output`` within the peer's windows.
extension HTTP2ConnectionState {
  /// Opens a stream (client): its ID, for the HEADERS written next; `nil` when
  /// ``acceptsStreams`` is false or the connection is at capacity.
  mutating func openStream() -> HTTP2StreamID? {
    guard mode == .client, acceptsStreams, !isAtCapacity else { return nil }
    let id = nextStreamID
    nextStreamID = id.advanced(by: 2)
    streams[id] = newStream(opened: false)
    return id
  }

  /// Encodes `payload` on stream `streamID`; `promise` completes once it is written, and fails
  /// when the stream or the connection is gone first. HEADERS, DATA, RST_STREAM and
  /// WINDOW_UPDATE go on a stream; GOAWAY and PING on the root stream.
  mutating func write(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID, promise: EventLoopPromise<Void>?) {
    switch payload {
    case .headers, .data:
      guard var stream = streams[streamID], !stream.localEnded else {
        complete(promise, failed: true)
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
      // A stream whose HEADERS never left is forgotten: to the peer it was never opened.
      let opened = streams[streamID]?.opened ?? false
      remove(streamID)
      guard opened else {
        complete(promise, failed: false)
        return
      }
      writeReset(streamID, code)
      keep(promise)
    case .windowUpdate(let increment):
      if streamID != .rootStream {
        guard let stream = streams[streamID] else {
          complete(promise, failed: false)
          return
        }
        let held = max(0, configuration.windowSize - stream.inboundWindow)
        streams[streamID]!.inboundWindow += increment
        released(held - max(0, configuration.windowSize - stream.inboundWindow - increment))
      }
      output.writeHTTP2Frame(kind: .windowUpdate, streamID: streamID, value: UInt32(increment))
      keep(promise)
    case .goAway(let lastStreamID, let code, let opaqueData):
      goAwaySent = true
      writeGoAway(lastStreamID: lastStreamID, code: code, debugData: opaqueData)
      keep(promise)
    case .ping(let data, let ack):
      output.writeHTTP2FrameHeader(length: 8, kind: .ping, flags: ack ? HTTP2FrameFlag.ack : 0, streamID: .rootStream)
      output.writeInteger(data.integer)
      keep(promise)
    default:
      complete(promise, failed: true)
    }
  }

  /// Encodes HEADERS at once, and DATA as far as both windows allow; the rest waits.
  mutating func writeOrWait(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID, promise: EventLoopPromise<Void>?) {
    switch payload {
    case .headers(let headers):
      streams[streamID]!.opened = true
      writeHeaders(headers, on: streamID)
      keep(promise)
    case .data(let data):
      guard case .byteBuffer(var bytes) = data.data else {
        complete(promise, failed: true)
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

  /// Encodes the waiting frames of `ids` that the windows now allow, in order.
  mutating func writeWaitingFrames(of ids: [HTTP2StreamID]) {
    for id in ids {
      guard let waiting = streams[id]?.waiting, !waiting.isEmpty else { continue }
      streams[id]!.waiting = []
      for (index, frame) in waiting.enumerated() {
        guard let stream = streams[id] else {
          complete(frame.promise, failed: true)  // reset meanwhile
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
  mutating func keep(_ promise: EventLoopPromise<Void>?) {
    if let promise { outputPromises.append(promise) }
  }

  /// Completes `promise` now (by the owner, outside this value): there is nothing to write, or
  /// nothing can be.
  mutating func complete(_ promise: EventLoopPromise<Void>?, failed: Bool) {
    if let promise { effects.append(.completeWrite(promise, failed: failed)) }
  }

  /// Encodes DATA, in frames no larger than the peer takes, and spends the windows.
  mutating func writeData(_ bytes: inout ByteBuffer, endStream: Bool, on streamID: HTTP2StreamID) {
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
        earlierOutput.append(output)
        earlierOutput.append(chunk)
        output.clear()
      }
    } while bytes.readableBytes > 0
  }

  /// DATA payloads up to this size are copied into the output; larger ones are written as their
  /// own buffers.
  static let copiedDataLimit = 4096

  /// Encodes a header block: one HEADERS frame, and CONTINUATION frames when it is larger than
  /// the peer's frame size.
  mutating func writeHeaders(_ headers: HTTP2Frame.FramePayload.Headers, on streamID: HTTP2StreamID) {
    let start = output.writerIndex
    let flags = HTTP2FrameFlag.endHeaders | (headers.endStream ? HTTP2FrameFlag.endStream : 0)
    output.writeHTTP2FrameHeader(length: 0, kind: .headers, flags: flags, streamID: streamID)
    HeaderBlockEncoder.encode(headers.headers, to: &output)
    let length = output.writerIndex - start - HTTP2Protocol.frameHeaderLength
    guard length > peerMaxFrameSize else {
      output.setHTTP2FrameLength(length, at: start)
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
  }

  mutating func writeReset(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode) {
    output.writeHTTP2Frame(kind: .rstStream, streamID: streamID, value: UInt32(code.networkCode))
  }

  mutating func writeGoAway(lastStreamID: HTTP2StreamID, code: HTTP2ErrorCode, debugData: ByteBuffer?) {
    var debug = debugData ?? ByteBuffer()
    output.writeHTTP2FrameHeader(length: 8 + debug.readableBytes, kind: .goAway, streamID: .rootStream)
    output.writeInteger(UInt32(Int32(lastStreamID)))
    output.writeInteger(UInt32(code.networkCode))
    output.writeBuffer(&debug)
  }
}
