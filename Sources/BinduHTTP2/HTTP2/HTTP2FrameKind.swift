/// The frame types and flags of RFC 9113 §6 that the mesh's HTTP/2 connections read and write.
enum HTTP2FrameKind: UInt8 {
  case data = 0x0
  case headers = 0x1
  case priority = 0x2
  case rstStream = 0x3
  case settings = 0x4
  case pushPromise = 0x5
  case ping = 0x6
  case goAway = 0x7
  case windowUpdate = 0x8
  case continuation = 0x9
}

/// The flag bits of a frame header.
enum HTTP2FrameFlag {
  static let endStream: UInt8 = 0x1
  static let ack: UInt8 = 0x1
  static let endHeaders: UInt8 = 0x4
  static let padded: UInt8 = 0x8
  static let priority: UInt8 = 0x20
}

/// Protocol constants of RFC 9113.
enum HTTP2Protocol {
  /// The client connection preface (§3.4).
  static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
  /// The length of a frame header.
  static let frameHeaderLength = 9
  /// The window every stream and the connection start with (§6.9.2).
  static let defaultWindow = 65_535
  /// The largest flow-control window (§6.9.1).
  static let maxWindow = Int(Int32.max)
  /// The frame size every peer accepts, and the smallest it may ask for (§4.2).
  static let defaultMaxFrameSize = 16_384
  /// The largest frame size a peer may ask for (§6.5.2).
  static let maxFrameSizeLimit = 16_777_215
}
