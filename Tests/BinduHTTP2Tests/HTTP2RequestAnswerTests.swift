import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduHTTP2

/// What a server connection does with requests it does not forward, frame by frame: the
/// answers it writes itself, `content-length`, WINDOW_UPDATE floods and the peer's header-list
/// limit.
@Suite struct HTTP2RequestAnswerTests {
  typealias Connection = HTTP2ConnectionStateTests.Connection

  static func summary(_ frames: [HTTP2FrameReader.Frame]) -> [String] { HTTP2ConnectionStateTests.summary(frames) }

  static func request(replacing name: String, with value: String?) -> [(String, String)] {
    Connection.request.compactMap { $0.0 == name ? value.map { (name, $0) } : $0 }
  }

  /// The header list of the HEADERS frames among `frames`.
  static func headers(of frames: [HTTP2FrameReader.Frame]) throws -> HPACKHeaders {
    var decoder = HeaderBlockDecoder(maxHeaderListSize: 16_384)
    var block = try #require(frames.first { $0.kind == HTTP2FrameKind.headers.rawValue }).payload
    return try decoder.decode(&block)
  }

  @Test func aGETIsAnswered405AndTheRestOfItsRequestCutOff() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Self.request(replacing: ":method", with: "GET"), stream: 1)
    #expect(connection.effects() == ["refused 1 (method): :method is not POST (answered 405)", "closed 1 ended"])
    let frames = try connection.written()
    #expect(Self.summary(frames).map { $0.split(separator: " ").prefix(2).joined(separator: " ") }
      == ["headers 1", "data 1", "rstStream 1"])
    #expect(frames.last?.payload.getInteger(at: frames.last!.payload.readerIndex, as: UInt32.self) == 0)  // NO_ERROR
    let headers = try Self.headers(of: frames)
    #expect(headers.first(name: ":status") == "405" && headers.first(name: "allow") == "POST")
    #expect(frames[1].has(HTTP2FrameFlag.endStream))
    // Its late DATA is dropped, and the connection goes on.
    try connection.read(data: 100, stream: 1, endStream: true)
    try connection.read(headers: Connection.request, stream: 3)
    #expect(connection.effects() == ["headers 3"])
  }

  @Test func aHEADGetsNoBodyAndAnEndedRequestNoReset() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Self.request(replacing: ":method", with: "HEAD"), stream: 1, endStream: true)
    let frames = try connection.written()
    #expect(frames.count == 1 && frames[0].has(HTTP2FrameFlag.endStream))
    #expect(try Self.headers(of: frames).first(name: ":status") == "405")
  }

  @Test func anotherContentTypeIsAnswered415() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Self.request(replacing: "content-type", with: "application/json"), stream: 1, endStream: true)
    #expect(connection.effects().first == "refused 1 (content_type): content-type is not application/grpc (answered 415)")
    #expect(try Self.headers(of: connection.written()).first(name: ":status") == "415")
  }

  @Test func dataBeyondItsContentLengthResetsTheStreamBeforeItIsPassedOn() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Connection.request + [("content-length", "1")], stream: 1)
    try connection.read(data: 19, stream: 1, endStream: true)
    #expect(connection.effects() == [
      "headers 1", "refused 1 (content_length): DATA other than its content-length", "closed 1 protocol_error",
    ])
    #expect(Self.summary(try connection.written()).contains("rstStream 1 1"))
    #expect(connection.state.bufferedBytes == 0)
  }

  @Test func dataShortOfItsContentLengthIsMalformedAtItsEnd() throws {
    let connection = try Connection(.server)
    try connection.read(headers: Connection.request + [("content-length", "30")], stream: 1)
    try connection.read(data: 10, stream: 1)
    try connection.read(data: 10, stream: 1, endStream: true)
    #expect(connection.effects() == [
      "headers 1", "data 1 10", "refused 1 (content_length): DATA other than its content-length", "closed 1 protocol_error",
    ])
    // Exactly its content-length passes.
    try connection.read(headers: Connection.request + [("content-length", "20")], stream: 3)
    try connection.read(data: 10, stream: 3)
    try connection.read(data: 10, stream: 3, endStream: true)
    #expect(connection.effects() == ["headers 3", "data 3 10", "data 3 10"])
    // END_STREAM on the HEADERS of a request that announces a body.
    try connection.read(headers: Connection.request + [("content-length", "5")], stream: 5, endStream: true)
    #expect(connection.effects().first == "refused 5 (content_length): END_STREAM before its content-length")
  }

  @Test func aFloodOfWindowUpdatesWhileNothingWaitsEndsTheConnection() throws {
    let connection = try Connection(.server) { $0.guards.maxControlFrames = 51 }  // its SETTINGS and 50 updates
    try connection.read(headers: Connection.request, stream: 1)
    for _ in 0..<25 {
      try connection.read(.windowUpdate, stream: 0, [0, 0, 0, 1])
      try connection.read(.windowUpdate, stream: 1, [0, 0, 0, 1])
    }
    #expect(throws: HTTP2ConnectionError.self) { try connection.read(.windowUpdate, stream: 0, [0, 0, 0, 1]) }
  }

  @Test func windowUpdatesThatFreeWaitingDataAreNotCounted() throws {
    let connection = try Connection(.server) { $0.guards.maxControlFrames = 5 }
    try connection.read(headers: Connection.request, stream: 1)
    connection.state.write(.headers(.init(headers: [":status": "200"])), on: 1, promise: nil)
    // A large answer, given window 1 KiB at a time by a slow reader: 200 updates, each freeing data.
    let body = ByteBuffer(repeating: 1, count: HTTP2Protocol.defaultWindow + 200 * 1024)
    connection.state.write(.data(.init(data: .byteBuffer(body))), on: 1, promise: nil)
    for _ in 0..<200 {
      try connection.read(.windowUpdate, stream: 1, [0, 0, 4, 0])
      try connection.read(.windowUpdate, stream: 0, [0, 0, 4, 0])
    }
    #expect(!connection.state.failed)
    #expect(connection.state.streams[1]?.waiting.isEmpty == true)
  }

  @Test func theReplicasHeaderListLimitIsKept() throws {
    let connection = try Connection(.client)
    #expect(connection.state.peerMaxHeaderListSize == nil)
    try connection.read(.settings, stream: 0, [0, 6, 0, 0, 0x10, 0])  // MAX_HEADER_LIST_SIZE 4096
    #expect(connection.state.peerMaxHeaderListSize == 4096)
    #expect(HeaderListSize.of([":method": "POST", "te": "trailers"]) == 7 + 4 + 32 + 2 + 8 + 32)
  }
}
