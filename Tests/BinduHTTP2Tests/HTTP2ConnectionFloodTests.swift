import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduHTTP2

/// More of the callers' side of ``HTTP2Connection`` in an `EmbeddedChannel`: each guard cut off
/// at its limit, windows changed mid-stream, and a delegate that answers from inside the
/// connection's own call.
@Suite struct HTTP2ConnectionFloodTests {
  typealias Peer = HTTP2ConnectionTests.Peer

  static func bytes(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.bigEndian, Array.init) }

  @Test func resetsPastTheLimitEndTheConnection() throws {
    var peer = try Peer { $0.guards.maxResets = 5 }
    for index: Int32 in 0..<5 {
      try peer.request(1 + 2 * index)
      try peer.send(.rstStream, stream: 1 + 2 * index, Self.bytes(8))
    }
    #expect(try peer.goAway() == nil)
    try peer.request(11)
    try peer.send(.rstStream, stream: 11, Self.bytes(8))
    #expect(try peer.goAway() == .enhanceYourCalm)
    #expect(peer.recorder.failed == ["rapid_reset"])
  }

  @Test func emptyDataFramesInARowEndTheConnection() throws {
    var peer = try Peer()
    try peer.request(1)
    try peer.send(.data, stream: 1)
    #expect(try peer.goAway() == nil)
    try peer.send(.data, stream: 1)
    #expect(try peer.goAway() == .enhanceYourCalm)
    #expect(peer.recorder.failed == ["empty_data_flood"])
    #expect(peer.recorder.data.isEmpty, "empty frames are not passed on")
  }

  @Test func controlFramesPastTheBudgetEndTheConnection() throws {
    var peer = try Peer { $0.guards.maxControlFrames = 10 }
    for _ in 0..<9 { try peer.send(.ping, stream: 0, Array(repeating: 1, count: 8)) }  // and the first SETTINGS
    #expect(try peer.goAway() == nil)
    try peer.send(.ping, stream: 0, Array(repeating: 1, count: 8))
    #expect(try peer.goAway() == .enhanceYourCalm)
    #expect(peer.recorder.failed == ["control_frame_flood"])
  }

  @Test func answersWaitForAWindowShrunkMidStreamAndLeaveWhenItGrows() throws {
    var peer = try Peer()
    try peer.request(1)
    try peer.send(.settings, stream: 0, [0, 4] + Self.bytes(10))  // INITIAL_WINDOW_SIZE 10
    peer.connection.write(.headers(.init(headers: [":status": "200"])), on: 1)
    peer.connection.write(.data(.init(data: .byteBuffer(ByteBuffer(repeating: 7, count: 25)))), on: 1)
    peer.channel.embeddedEventLoop.run()
    let first = try peer.written().filter { $0.kind == HTTP2FrameKind.data.rawValue }
    #expect(first.map(\.payload.readableBytes) == [10])
    // Shrunk below what was sent: the stream's window is -5, and nothing more leaves.
    try peer.send(.settings, stream: 0, [0, 4] + Self.bytes(5))
    #expect(try peer.written().filter { $0.kind == HTTP2FrameKind.data.rawValue }.isEmpty)
    // Grown by 100: the window is 95 and the other 15 bytes leave.
    try peer.send(.settings, stream: 0, [0, 4] + Self.bytes(105))
    peer.channel.embeddedEventLoop.run()
    let rest = try peer.written().filter { $0.kind == HTTP2FrameKind.data.rawValue }
    #expect(rest.map(\.payload.readableBytes) == [15])
  }

  @Test func aDelegateThatAnswersFromInsideTheConnectionsCallClosesTheStream() throws {
    var peer = try Peer()
    let connection = peer.connection
    peer.recorder.onHeaders = { id in
      connection.write(.headers(.init(headers: GRPCHeaders.trailersOnly(.unimplemented, message: "no"), endStream: true)), on: id)
    }
    try peer.request(1)
    try peer.request(3)
    #expect(peer.recorder.closed.map { Int($0.0) } == [1, 3])
    // The requests had not ended: each answer cuts the rest off with RST_STREAM NO_ERROR.
    #expect(Peer.resets(try peer.written()).map(\.1) == [.noError, .noError])
    #expect(peer.connection.openStreams == 0)
  }
}
