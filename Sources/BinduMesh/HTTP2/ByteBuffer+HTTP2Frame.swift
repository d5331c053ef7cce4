import NIOCore
import NIOHTTP2

extension ByteBuffer {
  /// Writes a frame header (RFC 9113 §4.1).
  mutating func writeHTTP2FrameHeader(length: Int, kind: HTTP2FrameKind, flags: UInt8 = 0, streamID: HTTP2StreamID) {
    writeInteger(UInt16(truncatingIfNeeded: length >> 8))
    writeInteger(UInt8(truncatingIfNeeded: length))
    writeInteger(kind.rawValue)
    writeInteger(flags)
    writeInteger(UInt32(Int32(streamID)))
  }

  /// Sets the length field of the frame header written at `index`.
  mutating func setHTTP2FrameLength(_ length: Int, at index: Int) {
    setInteger(UInt16(truncatingIfNeeded: length >> 8), at: index)
    setInteger(UInt8(truncatingIfNeeded: length), at: index + 2)
  }

  /// Writes a frame whose payload is one 32-bit integer: RST_STREAM, WINDOW_UPDATE.
  mutating func writeHTTP2Frame(kind: HTTP2FrameKind, streamID: HTTP2StreamID, value: UInt32) {
    writeHTTP2FrameHeader(length: 4, kind: kind, streamID: streamID)
    writeInteger(value)
  }
}
