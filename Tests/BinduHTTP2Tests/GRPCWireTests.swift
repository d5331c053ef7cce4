import GRPCCore
import NIOCore
import NIOHPACK
import Testing

@testable import BinduHTTP2

@Suite struct GRPCWireTests {
  @Test func timeoutParsing() {
    #expect(GRPCTimeout.parse("100m") == 100_000_000)
    #expect(GRPCTimeout.parse("3S") == 3_000_000_000)
    #expect(GRPCTimeout.parse("1H") == 3_600_000_000_000)
    #expect(GRPCTimeout.parse("5") == nil)
    #expect(GRPCTimeout.parse("123456789m") == nil)
    #expect(GRPCTimeout.parse("12x") == nil)
  }

  @Test func timeoutFormattingNeverShortensTheTimeLeft() {
    for nanos: Int64 in [1, 999, 1_500_000, 29_999_999_999, 86_400_000_000_000] {
      let text = GRPCTimeout.format(nanoseconds: nanos)
      #expect(text.count <= 9)
      #expect(GRPCTimeout.parse(Substring(text))! >= nanos)
    }
    #expect(GRPCTimeout.format(nanoseconds: 30_000_000_000) == "30000000u")
  }

  @Test func scannerFollowsPrefixesAcrossFrames() throws {
    var message = ByteBuffer()
    for length in [3, 0, 10] {
      message.writeInteger(UInt8(0))
      message.writeInteger(UInt32(length))
      message.writeRepeatingByte(7, count: length)
    }
    var scanner = MessageFrameScanner(limit: 10)
    var started = 0
    // Feed one byte at a time: prefixes split across frames must still be found.
    for index in 0..<message.readableBytes {
      started += try scanner.scan(message.getSlice(at: index, length: 1)!)
    }
    #expect(started == 3)
    #expect(scanner.messagesStarted == 3)
  }

  @Test func scannerRefusesMessagesOverTheLimit() {
    var buffer = ByteBuffer()
    buffer.writeInteger(UInt8(0))
    buffer.writeInteger(UInt32(11))
    var scanner = MessageFrameScanner(limit: 10)
    #expect(throws: MessageFrameScanner.Failure.tooLarge(length: 11, limit: 10)) { try scanner.scan(buffer) }
  }

  @Test func trailersOnlyCarryStatusAndEncodedMessage() {
    let headers = GRPCHeaders.trailersOnly(.unavailable, message: "no replica in pool \"a\" 100%")
    #expect(headers.first(name: ":status") == "200")
    #expect(GRPCHeaders.status(of: headers) == 14)
    #expect(headers.first(name: "grpc-message") == "no replica in pool \"a\" 100%25")
    #expect(Status.Code.deadlineExceeded.canonicalName == "DeadlineExceeded")
  }

  @Test func scannerTellsWhenAMessageIsWholeAcrossFrames() throws {
    var scanner = MessageFrameScanner(limit: 100)
    // A 6-byte message split over three frames, then an empty message.
    _ = try scanner.scan(ByteBuffer(bytes: [0, 0, 0]))
    #expect(scanner.messagesEnded == 0)
    _ = try scanner.scan(ByteBuffer(bytes: [0, 6, 1, 2, 3]))
    #expect(scanner.messagesStarted == 1 && scanner.messagesEnded == 0)
    _ = try scanner.scan(ByteBuffer(bytes: [4, 5, 6, 0, 0, 0, 0, 0]))
    #expect(scanner.messagesStarted == 2 && scanner.messagesEnded == 2)
  }
}
