import CFuzzDriver
import Foundation
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2

@testable import BinduHTTP2

/// Runs libFuzzer's driver over ``fuzzHTTP2(_:_:)`` (libFuzzer's flags and corpus folders on the
/// command line, as `scripts/fuzz` passes them).
@main
enum FuzzMain {
  static func main() {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzHTTP2(data!, size) })
  }
}

/// One input (`scripts/fuzz`; also exported under libFuzzer's name for its own `main`): what a
/// caller sends the callback
/// listener after its connection preface, read by the data path's ``HTTP2Connection`` (frame
/// reader, HPACK decoder, stream states, flow control, guards, request checks), which answers
/// every request it accepts. An input whose first byte is 0xFF goes to the HPACK decoder alone,
/// as two header blocks in a row; one whose first byte is 0xFE is what a replica sends a mesh
/// that has opened three calls to it (the client side of the connection). A crash, a sanitizer
/// report or a leak is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP2(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let input = UnsafeBufferPointer(start: data, count: size)
  if let first = input.first, first == 0xFF {
    decodeHeaderBlocks(input.dropFirst())
  } else if let first = input.first, first == 0xFE {
    readAsMesh(UnsafeBufferPointer(rebasing: input.dropFirst()))
  } else {
    readAsCaller(input)
  }
  return 0
}

/// Two header blocks, split where the byte after the marker says, through one decoder.
private func decodeHeaderBlocks(_ input: Slice<UnsafeBufferPointer<UInt8>>) {
  var decoder = HeaderBlockDecoder(maxHeaderListSize: 4096)
  let split = input.first.map { Int($0) % (input.count + 1) } ?? 0
  var first = ByteBuffer(bytes: input.prefix(split))
  var second = ByteBuffer(bytes: input.dropFirst(split))
  _ = try? decoder.decode(&first)
  _ = try? decoder.decode(&second)
}

/// The bytes after the preface, in two reads split where the first byte says, so that frames
/// also arrive in pieces.
private func readAsCaller(_ input: UnsafeBufferPointer<UInt8>) {
  // A caller's connection as the mesh makes it with its defaults (callbacks.*), fewer streams.
  var configuration = HTTP2Connection.Configuration(maxConcurrentStreams: 8, windowSize: 1 << 20)
  configuration.maxBufferedBytes = 32 << 20
  configuration.maxHeaderListSize = 4096
  let answerer = Answerer()
  let connection = HTTP2Connection(mode: .server, configuration: configuration, delegate: answerer)
  answerer.connection = connection
  var bytes = ByteBuffer(bytes: HTTP2Protocol.preface)
  bytes.writeBytes(input)
  let split = input.first.map { HTTP2Protocol.preface.count + Int($0) % (input.count + 1) } ?? 0
  feed(connection, bytes, splitAt: split) { _ in }
}

/// Runs `connection` in an `EmbeddedChannel`, lets `setUp` write on it, then reads `bytes` in two
/// pieces split at `splitAt`, dropping whatever the connection writes.
private func feed(
  _ connection: HTTP2Connection, _ bytes: ByteBuffer, splitAt split: Int, setUp: (HTTP2Connection) -> Void
) {
  let channel = EmbeddedChannel()
  do {
    try channel.pipeline.syncOperations.addHandler(connection)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
  } catch {
    fatalError("cannot set up the channel: \(error)")
  }
  setUp(connection)
  var bytes = bytes
  let first = bytes.readSlice(length: min(split, bytes.readableBytes))!
  for piece in [first, bytes] where channel.isActive {
    _ = try? channel.writeInbound(piece)
    channel.embeddedEventLoop.run()
    while (try? channel.readOutbound(as: ByteBuffer.self)) ?? nil != nil {}
  }
  _ = try? channel.finish(acceptAlreadyClosed: true)
}

/// Answers each request the connection accepts: response headers, a message, trailers.
private final class Answerer: QuietDelegate {
  var connection: HTTP2Connection?
  private var answered: Set<HTTP2StreamID> = []

  func received(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID) {
    guard let connection, case .headers = payload, answered.insert(streamID).inserted else { return }
    connection.write(.headers(.init(headers: [":status": "200", "content-type": "application/grpc"])), on: streamID)
    connection.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: [0, 0, 0, 0, 2, 8, 1])))), on: streamID)
    connection.write(.headers(.init(headers: ["grpc-status": "0"], endStream: true)), on: streamID)
  }

  func streamClosed(_ streamID: HTTP2StreamID, reason: HTTP2ErrorCode?) { answered.remove(streamID) }
  func connectionInactive() { connection = nil }
}

/// The bytes a replica sends to a mesh that has opened three calls on the connection and sent
/// part of each request, in two reads as for a caller.
private func readAsMesh(_ input: UnsafeBufferPointer<UInt8>) {
  let sender = RequestSender()
  // A replica's connection as the mesh makes it with its defaults (upstream.*).
  var configuration = HTTP2Connection.Configuration(maxConcurrentStreams: 1000, windowSize: 1 << 20)
  configuration.guards = .chosenPeer
  let connection = HTTP2Connection(mode: .client, configuration: configuration, delegate: sender)
  sender.connection = connection
  let headers: HPACKHeaders = [
    ":method": "POST", ":scheme": "http", ":path": "/bindu.grpc.AgentHandler/HandleMessages",
    "content-type": "application/grpc", "te": "trailers",
  ]
  let split = input.first.map { Int($0) % (input.count + 1) } ?? 0
  feed(connection, ByteBuffer(bytes: input), splitAt: split) { connection in
    for _ in 0..<3 {
      guard let id = connection.openStream() else { break }
      connection.write(.headers(.init(headers: headers)), on: id)
      connection.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: [0, 0, 0, 0, 4, 10, 2, 18, 0])))), on: id)
    }
  }
}

/// Sends the rest of a call's request each time the replica sends a frame on it, gives the
/// window of its answers back, and resets a call the replica answered with an error.
private final class RequestSender: QuietDelegate {
  var connection: HTTP2Connection?

  func received(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID) {
    guard let connection else { return }
    switch payload {
    case .headers(let headers) where headers.headers.first(name: "grpc-status").map({ $0 != "0" }) ?? false:
      connection.write(.rstStream(.cancel), on: streamID)
    case .headers:
      connection.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: [1, 2])), endStream: true)), on: streamID)
    case .data(let data):
      connection.write(.windowUpdate(windowSizeIncrement: max(data.data.readableBytes, 1)), on: streamID)
    default:
      break
    }
  }

  func streamClosed(_ streamID: HTTP2StreamID, reason: HTTP2ErrorCode?) {}
  func connectionInactive() { connection = nil }
}

/// A delegate that ignores what the fuzzing delegates do not act on.
private protocol QuietDelegate: HTTP2ConnectionDelegate {}

extension QuietDelegate {
  func connectionActive() {}
  func refusedRequest(on streamID: HTTP2StreamID, _ problem: String, reason: RequestRefusal) {}
  func receivedGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {}
  func receivedPingAck(_ data: HTTP2PingData) {}
  func receivedEvent(_ event: Any) {}
  func connectionFailed(_ reason: String, goAway: String?) {}
}
