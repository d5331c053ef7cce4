import NIOCore
import NIOHTTP2

extension ByteBuffer {
  /// Writes a frame header (RFC 9113 §4.1), in one access to the buffer.
  mutating func writeHTTP2FrameHeader(length: Int, kind: HTTP2FrameKind, flags: UInt8 = 0, streamID: HTTP2StreamID) {
    // Length (24 bits), type, flags and stream ID, big-endian: one 64-bit and one 8-bit store.
    let id = UInt64(UInt32(Int32(streamID)))
    let head = UInt64(length & 0xFF_FFFF) << 40 | UInt64(kind.rawValue) << 32 | UInt64(flags) << 24 | id >> 8
    writeWithUnsafeMutableBytes(minimumWritableBytes: 9) { bytes in
      bytes.storeBytes(of: head.bigEndian, toByteOffset: 0, as: UInt64.self)
      bytes.storeBytes(of: UInt8(truncatingIfNeeded: id), toByteOffset: 8, as: UInt8.self)
      return 9
    }
  }

  /// Sets the length field of the frame header written at `index`.
  mutating func setHTTP2FrameLength(_ length: Int, at index: Int) {
    let offset = index - readerIndex
    withUnsafeMutableReadableBytes { bytes in
      bytes[offset] = UInt8(truncatingIfNeeded: length >> 16)
      bytes[offset + 1] = UInt8(truncatingIfNeeded: length >> 8)
      bytes[offset + 2] = UInt8(truncatingIfNeeded: length)
    }
  }

  /// Writes a frame whose payload is one 32-bit integer: RST_STREAM, WINDOW_UPDATE.
  mutating func writeHTTP2Frame(kind: HTTP2FrameKind, streamID: HTTP2StreamID, value: UInt32) {
    writeHTTP2FrameHeader(length: 4, kind: kind, streamID: streamID)
    writeInteger(value)
  }
}
