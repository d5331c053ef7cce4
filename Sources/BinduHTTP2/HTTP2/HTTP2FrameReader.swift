import NIOCore
import NIOHTTP2

/// Splits the bytes of an HTTP/2 connection into frames, without copying their payloads: each
/// frame's payload is a slice of the bytes read. Bytes of a frame not yet complete are kept for
/// the next read.
struct HTTP2FrameReader {
  /// One frame: its header fields and its payload.
  struct Frame {
    var kind: UInt8
    var flags: UInt8
    var streamID: HTTP2StreamID
    var payload: ByteBuffer

    func has(_ flag: UInt8) -> Bool { flags & flag != 0 }
  }

  private var buffered = ByteBuffer()
  private var awaitingPreface: Bool
  /// The largest frame payload accepted: the SETTINGS_MAX_FRAME_SIZE this side announced.
  private let maxFrameSize: Int

  /// `expectsPreface`: a server reads the client's connection preface first.
  init(expectsPreface: Bool, maxFrameSize: Int = HTTP2Protocol.defaultMaxFrameSize) {
    self.awaitingPreface = expectsPreface
    self.maxFrameSize = maxFrameSize
  }

  /// Adds bytes read from the connection.
  mutating func append(_ bytes: ByteBuffer) {
    if buffered.readableBytes == 0 {
      buffered = bytes
    } else {
      // The rest of a frame and the new bytes, in a buffer of just their size. Appending to the
      // old read's buffer, which frames still forwarded share, would copy its whole storage and
      // grow it by each read: a long stream of frames split across reads kept growing it.
      var bytes = bytes
      var joined = ByteBufferAllocator().buffer(capacity: buffered.readableBytes + bytes.readableBytes)
      joined.writeBuffer(&buffered)
      joined.writeBuffer(&bytes)
      buffered = joined
    }
  }

  /// The next complete frame, or `nil` until more bytes arrive.
  mutating func next() throws(HTTP2ConnectionError) -> Frame? {
    if awaitingPreface {
      guard buffered.readableBytes >= HTTP2Protocol.preface.count else { return nil }
      guard buffered.readableBytesView.prefix(HTTP2Protocol.preface.count).elementsEqual(HTTP2Protocol.preface) else {
        throw HTTP2ConnectionError(.protocolError, "the connection did not begin with the HTTP/2 client preface")
      }
      buffered.moveReaderIndex(forwardBy: HTTP2Protocol.preface.count)
      awaitingPreface = false
    }
    guard buffered.readableBytes >= HTTP2Protocol.frameHeaderLength,
      let high = buffered.getInteger(at: buffered.readerIndex, as: UInt16.self),
      let low = buffered.getInteger(at: buffered.readerIndex + 2, as: UInt8.self)
    else { return nil }
    let length = Int(high) << 8 | Int(low)
    guard length <= maxFrameSize else {
      throw HTTP2ConnectionError(.frameSizeError, "a frame of \(length) bytes is over the limit of \(maxFrameSize)")
    }
    guard buffered.readableBytes >= HTTP2Protocol.frameHeaderLength + length else { return nil }
    buffered.moveReaderIndex(forwardBy: 3)
    let kind = buffered.readInteger(as: UInt8.self)!
    let flags = buffered.readInteger(as: UInt8.self)!
    let streamID = HTTP2StreamID(Int32(bitPattern: buffered.readInteger(as: UInt32.self)! & 0x7FFF_FFFF))
    let payload = buffered.readSlice(length: length)!
    return Frame(kind: kind, flags: flags, streamID: streamID, payload: payload)
  }
}
