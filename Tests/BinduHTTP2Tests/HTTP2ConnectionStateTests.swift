import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduHTTP2

/// ``HTTP2ConnectionState`` as a value, frame by frame, without a channel: the frames it encodes
/// and the effects it asks its owner for.
@Suite struct HTTP2ConnectionStateTests {
  /// A connection's rules whose peer has sent its SETTINGS, with the clock and output at hand.
  final class Connection {
    var state: HTTP2ConnectionState
    var reader: HTTP2FrameReader
    let now = NIODeadline.uptimeNanoseconds(1_000_000_000)

    init(_ mode: HTTP2ConnectionState.Mode, configure: (inout HTTP2ConnectionState.Configuration) -> Void = { _ in }) throws {
      var configuration = HTTP2ConnectionState.Configuration(maxConcurrentStreams: 100, windowSize: HTTP2Protocol.defaultWindow)
      configure(&configuration)
      state = HTTP2ConnectionState(mode: mode, configuration: configuration)
      reader = HTTP2FrameReader(expectsPreface: mode == .client)  // what this side writes
      state.start()
      try read(.settings, stream: 0)
      _ = try written()  // SETTINGS, its acknowledgement
    }

    func read(_ kind: HTTP2FrameKind, flags: UInt8 = 0, stream: Int32, _ payload: [UInt8] = []) throws {
      let frame = HTTP2FrameReader.Frame(
        kind: kind.rawValue, flags: flags, streamID: HTTP2StreamID(stream), payload: ByteBuffer(bytes: payload))
      try state.read(frame, now: now)
    }

    func read(headers: [(String, String)], stream: Int32, endStream: Bool = false) throws {
      var block = ByteBuffer()
      HeaderBlockEncoder.encode(HPACKHeaders(headers), to: &block)
      try read(
        .headers, flags: HTTP2FrameFlag.endHeaders | (endStream ? HTTP2FrameFlag.endStream : 0), stream: stream,
        Array(block.readableBytesView))
    }

    func read(data count: Int, stream: Int32, endStream: Bool = false) throws {
      try read(.data, flags: endStream ? HTTP2FrameFlag.endStream : 0, stream: stream, Array(repeating: 7, count: count))
    }

    /// The frames encoded since the last call.
    func written() throws -> [HTTP2FrameReader.Frame] {
      for buffer in state.earlierOutput { reader.append(buffer) }
      reader.append(state.output)
      state.earlierOutput.removeAll()
      state.output.clear()
      var frames: [HTTP2FrameReader.Frame] = []
      while let frame = try reader.next() { frames.append(frame) }
      return frames
    }

    /// The effects queued since the last call, as text.
    func effects() -> [String] {
      defer { state.effects.removeAll() }
      return state.effects.map {
        switch $0 {
        case .received(.headers(let headers), let id): "headers \(Int(id))\(headers.endStream ? " end" : "")"
        case .received(.data(let data), let id): "data \(Int(id)) \(data.data.readableBytes)"
        case .received(_, let id): "frame \(Int(id))"
        case .streamClosed(let id, let reason): "closed \(Int(id)) \(reason.map { "\($0.label)" } ?? "ended")"
        case .refusedRequest(let id, let problem, let reason): "refused \(Int(id)) (\(reason.rawValue)): \(problem)"
        case .receivedGoAway(let last, _): "goaway \(Int(last))"
        case .receivedPingAck: "ping ack"
        case .completeWrite(_, let failed): failed ? "write failed" : "write done"
        }
      }
    }

    static let request: [(String, String)] = [
      (":method", "POST"), (":scheme", "http"), (":path", "/bindu.grpc.AgentHandler/HandleMessages"),
      ("content-type", "application/grpc"), ("te", "trailers"),
    ]
  }

  /// (kind, stream, the first 4 payload bytes as a number) of each frame.
  static func summary(_ frames: [HTTP2FrameReader.Frame]) -> [String] {
    frames.map { frame in
      let kind = HTTP2FrameKind(rawValue: frame.kind).map { "\($0)" } ?? "\(frame.kind)"
      let value = frame.payload.readableBytes >= 4 ? frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt32.self)! : 0
      return "\(kind) \(Int(frame.streamID)) \(value)"
    }
  }

  @Test func anAnswerCompleteBeforeItsRequestClosesTheClientsStream() throws {
    let connection = try Connection(.client)
    let opened = connection.state.openStream()
    let id = try #require(opened)
    connection.state.write(.headers(.init(headers: HPACKHeaders(Connection.request))), on: id, promise: nil)
    _ = try connection.written()
    try connection.read(headers: [(":status", "200"), ("content-type", "application/grpc")], stream: 1)
    try connection.read(headers: [("grpc-status", "0")], stream: 1, endStream: true)
    #expect(connection.effects() == ["headers 1", "headers 1 end", "closed 1 ended"])
    // The rest of the request is cut off, and the stream no longer counts against the limit.
    #expect(Self.summary(try connection.written()) == ["rstStream 1 0"])
    #expect(connection.state.streams.count == 0)
    // What the proxy still writes on it fails at once.
    connection.state.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: [1])))), on: id, promise: nil)
    #expect(try connection.written().isEmpty)
  }

  @Test func aServerClosesAStreamOnceItsAnswerIsWrittenAndCutsOffTheRequest() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Connection.request, stream: 1)
    connection.state.write(.headers(.init(headers: GRPCHeaders.trailersOnly(.unimplemented, message: "no"), endStream: true)), on: 1, promise: nil)
    #expect(connection.effects() == ["headers 1", "closed 1 ended"])
    #expect(Self.summary(try connection.written()).last == "rstStream 1 0")
    // The request's late DATA is dropped: the stream is closed, not idle.
    try connection.read(data: 10, stream: 1)
    #expect(connection.effects().isEmpty)
  }

  @Test func theConnectionWindowIsHeldBackWhileTheConnectionHoldsMoreThanItsLimit() throws {
    let connection = try Connection(.server) { $0.maxBufferedBytes = 40_000 }
    for stream: Int32 in [1, 3, 5] { try connection.read(headers: Connection.request, stream: stream) }
    try connection.read(data: 20_000, stream: 1)
    try connection.read(data: 20_000, stream: 3)
    // Half the window read, 40,000 bytes held: given back.
    #expect(Self.summary(try connection.written()) == ["windowUpdate 0 40000"])
    try connection.read(data: 20_000, stream: 5)
    try connection.read(data: 20_000, stream: 1)
    #expect(connection.state.bufferedBytes == 80_000)
    #expect(try connection.written().isEmpty)  // half read again, but 80,000 held
    connection.state.write(.windowUpdate(windowSizeIncrement: 20_000), on: 1, promise: nil)
    #expect(Self.summary(try connection.written()) == ["windowUpdate 1 20000"])  // 60,000 held
    connection.state.write(.rstStream(.cancel), on: 3, promise: nil)  // its 20,000 bytes are freed
    #expect(Self.summary(try connection.written()) == ["windowUpdate 0 40000", "rstStream 3 8"])
    #expect(connection.state.bufferedBytes == 40_000)
  }

  @Test func withoutALimitTheConnectionWindowGoesBackAtHalf() throws {
    let connection = try Connection(.server)
    for stream: Int32 in [1, 3] { try connection.read(headers: Connection.request, stream: stream) }
    try connection.read(data: 16_000, stream: 1)
    try connection.read(data: 16_000, stream: 3)
    try connection.read(data: 16_000, stream: 1)
    #expect(Self.summary(try connection.written()) == ["windowUpdate 0 48000"])
  }

  @Test func aPriorityFrameOfTheWrongSizeResetsItsStreamOnly() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Connection.request, stream: 1)
    try connection.read(.priority, stream: 1, [0, 0, 0, 0])
    #expect(connection.effects() == ["headers 1", "closed 1 frame_size_error"])
    #expect(Self.summary(try connection.written()) == ["rstStream 1 6"])
    try connection.read(headers: Connection.request, stream: 3)
    #expect(connection.effects() == ["headers 3"])
    #expect(!connection.state.failed)
    #expect(throws: HTTP2ConnectionError.self) { try connection.read(.priority, stream: 0, [0, 0, 0, 0, 0]) }
  }

  @Test func aNonASCIIFieldNameIsARefusedRequestNotACompressionError() throws {
    let connection = try Connection(.server)
    // A literal field without indexing, new name: 0x00, the name (length 2: 0xC3 0xA9), the value.
    var block = ByteBuffer()
    HeaderBlockEncoder.encode(HPACKHeaders(Connection.request), to: &block)
    block.writeBytes([0x00, 0x02, 0xC3, 0xA9, 0x01, 0x61])
    try connection.read(.headers, flags: HTTP2FrameFlag.endHeaders, stream: 1, Array(block.readableBytesView))
    #expect(connection.effects() == ["refused 1 (malformed): a field name that is not ASCII"])
    #expect(Self.summary(try connection.written()) == ["rstStream 1 1"])
    try connection.read(headers: Connection.request, stream: 3)
    #expect(connection.effects() == ["headers 3"])
  }

  @Test func framesWaitingForWindowFailWhenTheirStreamIsReset() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Connection.request, stream: 1)
    _ = connection.effects()
    let loop = EmbeddedEventLoop()
    let promise = loop.makePromise(of: Void.self)
    connection.state.write(.headers(.init(headers: [":status": "200"])), on: 1, promise: nil)
    let body = ByteBuffer(repeating: 1, count: HTTP2Protocol.defaultWindow + 10)
    connection.state.write(.data(.init(data: .byteBuffer(body))), on: 1, promise: promise)
    #expect(connection.state.streams[1]?.waiting.count == 1)
    try connection.read(.rstStream, stream: 1, [0, 0, 0, 8])
    #expect(connection.effects() == ["write failed", "closed 1 cancel"])
    promise.succeed()  // the owner fails it; here nothing else holds it
  }
}
