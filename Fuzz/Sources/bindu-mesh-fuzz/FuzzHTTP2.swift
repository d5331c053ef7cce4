import CFuzzDriver
import Foundation
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2

@testable import BinduMesh

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
/// as two header blocks in a row. A crash, a sanitizer report or a leak is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP2(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let input = UnsafeBufferPointer(start: data, count: size)
  if let first = input.first, first == 0xFF {
    decodeHeaderBlocks(input.dropFirst())
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
  let channel = EmbeddedChannel()
  var configuration = HTTP2Connection.Configuration.caller(.defaults)
  configuration.maxConcurrentStreams = 8
  configuration.maxHeaderListSize = 4096
  let answerer = Answerer()
  let connection = HTTP2Connection(mode: .server, configuration: configuration, delegate: answerer)
  answerer.connection = connection
  do {
    try channel.pipeline.syncOperations.addHandler(connection)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
  } catch {
    fatalError("cannot set up the channel: \(error)")
  }
  var bytes = ByteBuffer(bytes: HTTP2Protocol.preface)
  bytes.writeBytes(input)
  let split = input.first.map { HTTP2Protocol.preface.count + Int($0) % (input.count + 1) } ?? 0
  let first = bytes.readSlice(length: min(split, bytes.readableBytes))!
  for piece in [first, bytes] where channel.isActive {
    _ = try? channel.writeInbound(piece)
    channel.embeddedEventLoop.run()
    while (try? channel.readOutbound(as: ByteBuffer.self)) ?? nil != nil {}
  }
  _ = try? channel.finish(acceptAlreadyClosed: true)
}

/// Answers each request the connection accepts: response headers, a message, trailers.
private final class Answerer: HTTP2ConnectionDelegate {
  var connection: HTTP2Connection?
  private var answered: Set<HTTP2StreamID> = []

  func connectionActive() {}

  func received(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID) {
    guard let connection, case .headers = payload, answered.insert(streamID).inserted else { return }
    connection.write(.headers(.init(headers: [":status": "200", "content-type": "application/grpc"])), on: streamID)
    connection.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: [0, 0, 0, 0, 2, 8, 1])))), on: streamID)
    connection.write(.headers(.init(headers: ["grpc-status": "0"], endStream: true)), on: streamID)
  }

  func streamClosed(_ streamID: HTTP2StreamID, reason: HTTP2ErrorCode?) { answered.remove(streamID) }
  func refusedRequest(on streamID: HTTP2StreamID, _ problem: String) {}
  func receivedGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {}
  func receivedPingAck(_ data: HTTP2PingData) {}
  func receivedEvent(_ event: Any) {}
  func connectionFailed(_ reason: String, goAway: String?) {}
  func connectionInactive() { connection = nil }
}
