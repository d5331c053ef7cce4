import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduHTTP2

/// The callers' side of ``HTTP2Connection``, frame by frame in an `EmbeddedChannel`: what it
/// answers to each frame a peer may send, and what reaches its delegate.
@Suite struct HTTP2ConnectionTests {
  /// What the connection told its delegate.
  final class Recorder: HTTP2ConnectionDelegate {
    var headers: [(HTTP2StreamID, HPACKHeaders)] = []
    var data: [(HTTP2StreamID, Int)] = []
    var closed: [(HTTP2StreamID, HTTP2ErrorCode?)] = []
    var refused: [String] = []
    var failed: [String?] = []
    /// Runs for each header block, inside the connection's call (as a proxy's answer would).
    var onHeaders: ((HTTP2StreamID) -> Void)?

    func connectionActive() {}
    func received(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID) {
      switch payload {
      case .headers(let block):
        headers.append((streamID, block.headers))
        onHeaders?(streamID)
      case .data(let body): data.append((streamID, body.data.readableBytes))
      default: break
      }
    }
    func streamClosed(_ streamID: HTTP2StreamID, reason: HTTP2ErrorCode?) { closed.append((streamID, reason)) }
    func refusedRequest(on streamID: HTTP2StreamID, _ problem: String, reason: RequestRefusal) { refused.append(problem) }
    func receivedGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {}
    func receivedPingAck(_ data: HTTP2PingData) {}
    func receivedEvent(_ event: Any) {}
    func connectionFailed(_ reason: String, goAway: String?) { failed.append(goAway) }
    func connectionInactive() {}
  }

  /// A server connection with a peer that has sent its preface and SETTINGS.
  struct Peer {
    let channel = EmbeddedChannel()
    let recorder = Recorder()
    let connection: HTTP2Connection
    var reader = HTTP2FrameReader(expectsPreface: false)

    init(configure: (inout HTTP2Connection.Configuration) -> Void = { _ in }, sendPreface: Bool = true) throws {
      // As a caller's connection with the mesh's defaults (callbacks.*).
      var configuration = HTTP2Connection.Configuration(maxConcurrentStreams: 100)
      configuration.maxBufferedBytes = 32 << 20
      configure(&configuration)
      connection = HTTP2Connection(mode: .server, configuration: configuration, delegate: recorder)
      try channel.pipeline.syncOperations.addHandler(connection)
      try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
      if sendPreface {
        var bytes = ByteBuffer(bytes: HTTP2Protocol.preface)
        bytes.writeHTTP2FrameHeader(length: 0, kind: .settings, streamID: .rootStream)
        try send(bytes)
      }
    }

    func send(_ bytes: ByteBuffer) throws {
      try channel.writeInbound(bytes)
      channel.embeddedEventLoop.run()
    }

    /// Sends one frame.
    func send(_ kind: HTTP2FrameKind, flags: UInt8 = 0, stream: Int32, _ payload: [UInt8] = []) throws {
      var bytes = ByteBuffer()
      bytes.writeHTTP2FrameHeader(length: payload.count, kind: kind, flags: flags, streamID: HTTP2StreamID(stream))
      bytes.writeBytes(payload)
      try send(bytes)
    }

    /// Sends a request's HEADERS (END_HEADERS, and END_STREAM when asked).
    func request(_ stream: Int32, _ headers: [(String, String)] = Self.grpc, endStream: Bool = false) throws {
      try send(.headers, flags: HTTP2FrameFlag.endHeaders | (endStream ? HTTP2FrameFlag.endStream : 0), stream: stream,
               Self.block(headers))
    }

    static let grpc = [
      (":method", "POST"), (":scheme", "http"), (":path", "/bindu.grpc.AgentHandler/HandleMessages"),
      ("content-type", "application/grpc"), ("te", "trailers"),
    ]

    static func block(_ headers: [(String, String)]) -> [UInt8] {
      var buffer = ByteBuffer()
      HeaderBlockEncoder.encode(HPACKHeaders(headers), to: &buffer)
      return Array(buffer.readableBytesView)
    }

    /// Every frame the connection wrote so far (its SETTINGS first).
    mutating func written() throws -> [HTTP2FrameReader.Frame] {
      while let bytes = try channel.readOutbound(as: ByteBuffer.self) { reader.append(bytes) }
      var frames: [HTTP2FrameReader.Frame] = []
      while let frame = try reader.next() { frames.append(frame) }
      return frames
    }

    /// The code of the GOAWAY written, if any.
    mutating func goAway() throws -> HTTP2ErrorCode? {
      try written().last { $0.kind == HTTP2FrameKind.goAway.rawValue }.map { frame in
        HTTP2ErrorCode(networkCode: Int(frame.payload.getInteger(at: frame.payload.readerIndex + 4, as: UInt32.self)!))
      }
    }

    /// RST_STREAM frames written: stream and code.
    static func resets(_ frames: [HTTP2FrameReader.Frame]) -> [(Int, HTTP2ErrorCode)] {
      frames.filter { $0.kind == HTTP2FrameKind.rstStream.rawValue }.map {
        (Int($0.streamID), HTTP2ErrorCode(networkCode: Int($0.payload.getInteger(at: $0.payload.readerIndex, as: UInt32.self)!)))
      }
    }
  }

  @Test func aFirstFrameOtherThanSettingsEndsTheConnection() throws {
    var peer = try Peer(sendPreface: false)
    try peer.send(ByteBuffer(bytes: HTTP2Protocol.preface))
    try peer.request(1)
    #expect(try peer.goAway() == .protocolError)
    #expect(peer.recorder.headers.isEmpty)
  }

  @Test func streamsOverTheAnnouncedLimitAreRefused() throws {
    var peer = try Peer { $0.maxConcurrentStreams = 2 }
    for stream: Int32 in [1, 3, 5] { try peer.request(stream) }
    #expect(peer.recorder.headers.map { Int($0.0) } == [1, 3])
    let frames = try peer.written()
    #expect(Peer.resets(frames).map(\.0) == [5])
    #expect(Peer.resets(frames).map(\.1) == [.refusedStream])
    #expect(!frames.contains { $0.kind == HTTP2FrameKind.goAway.rawValue })
  }

  @Test func aMalformedRequestIsRefusedOnItsStreamAndTheNextOneGoesThrough() throws {
    var peer = try Peer()
    try peer.request(1, Peer.grpc + [("connection", "close")])
    try peer.request(3)
    #expect(peer.recorder.refused == ["connection-specific field connection"])
    #expect(peer.recorder.headers.map { Int($0.0) } == [3])
    #expect(Peer.resets(try peer.written()).map(\.1) == [.protocolError])
  }

  @Test func aHeaderListOverTheLimitIsRefusedAndTheConnectionGoesOn() throws {
    var peer = try Peer { $0.maxHeaderListSize = 1024 }
    try peer.request(1, Peer.grpc + [("x-big", String(repeating: "b", count: 2000))])
    try peer.request(3)
    #expect(peer.recorder.headers.map { Int($0.0) } == [3])
    let frames = try peer.written()
    #expect(Peer.resets(frames).map(\.0) == [1])
    #expect(!frames.contains { $0.kind == HTTP2FrameKind.goAway.rawValue })
  }

  @Test func paddedAndPriorityFlaggedHeadersAreRead() throws {
    let peer = try Peer()
    let block = Peer.block(Peer.grpc)
    // Pad length 3, then 5 bytes of priority (stream dependency and weight), the block, the padding.
    let payload = [3] + [0, 0, 0, 0, 16] + block + [0, 0, 0]
    try peer.send(
      .headers, flags: HTTP2FrameFlag.endHeaders | HTTP2FrameFlag.padded | HTTP2FrameFlag.priority, stream: 1, payload)
    #expect(peer.recorder.headers.first?.1.first(name: ":path") == "/bindu.grpc.AgentHandler/HandleMessages")
  }

  @Test func continuationsAreCountedZeroLengthOnesIncluded() throws {
    var peer = try Peer()
    try peer.send(.headers, stream: 1, Peer.block(Peer.grpc))
    for _ in 0..<6 { try peer.send(.continuation, stream: 1) }
    #expect(try peer.goAway() == .enhanceYourCalm)
  }

  @Test func aHeaderBlockInterruptedByAnotherFrameEndsTheConnection() throws {
    var peer = try Peer()
    try peer.send(.headers, stream: 1, Peer.block(Peer.grpc))
    try peer.send(.data, stream: 1, [0])
    #expect(try peer.goAway() == .protocolError)
  }

  @Test(arguments: [HTTP2FrameKind.ping, .goAway, .settings])
  func connectionFramesOnAStreamEndTheConnection(kind: HTTP2FrameKind) throws {
    var peer = try Peer()
    try peer.request(1)
    try peer.send(kind, stream: 1, Array(repeating: 0, count: kind == .settings ? 0 : 8))
    #expect(try peer.goAway() == .protocolError)
  }

  @Test func aWindowUpdateOnAnIdleStreamEndsTheConnection() throws {
    var peer = try Peer()
    try peer.send(.windowUpdate, stream: 7, [0, 0, 1, 0])
    #expect(try peer.goAway() == .protocolError)
  }

  @Test func aTableSizeUpdateAfterAFieldIsACompressionError() throws {
    var peer = try Peer()
    // An indexed field (:method GET, 0x82), then a dynamic table size update (0x20): §4.2 of
    // RFC 7541 wants updates at the start of a block only.
    try peer.send(.headers, flags: HTTP2FrameFlag.endHeaders, stream: 1, [0x82, 0x20])
    #expect(try peer.goAway() == .compressionError)
  }

  @Test func anInitialWindowPushingAStreamPastTheLimitIsAFlowControlError() throws {
    var peer = try Peer()
    try peer.request(1)
    let increment = UInt32(Int32.max) - 65_535
    try peer.send(.windowUpdate, stream: 1, withUnsafeBytes(of: increment.bigEndian, Array.init))
    let size = UInt32(Int32.max)
    try peer.send(.settings, stream: 0, [0, 4] + withUnsafeBytes(of: size.bigEndian, Array.init))
    #expect(try peer.goAway() == .flowControlError)
  }

  @Test func twoHundredStreamErrorsAreAllowedAndTheNextEndsTheConnection() throws {
    var peer = try Peer()
    let bad = Peer.grpc + [("te", "gzip")]
    for index in 0..<200 { try peer.request(Int32(1 + 2 * index), bad, endStream: true) }
    #expect(try peer.goAway() == nil)
    try peer.request(401, bad, endStream: true)
    #expect(try peer.goAway() == .enhanceYourCalm)
    #expect(peer.recorder.failed == ["stream_error_flood"])
  }

  @Test func trailersFromACallerMustEndTheStreamWithoutPseudoHeaders() throws {
    var peer = try Peer()
    try peer.request(1)
    try peer.send(.headers, flags: HTTP2FrameFlag.endHeaders | HTTP2FrameFlag.endStream, stream: 1,
                  Peer.block([(":path", "/x")]))
    #expect(peer.recorder.refused == ["pseudo-header :path in trailers"])
    #expect(peer.recorder.closed.map { $0.1 } == [.protocolError])
    #expect(Peer.resets(try peer.written()).map(\.1) == [.protocolError])
  }
}
