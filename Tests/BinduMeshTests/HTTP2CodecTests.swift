import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduMesh

/// The pieces of the data path's HTTP/2 connection that hold state of their own: the stream
/// table and the header block encoder.
@Suite struct HTTP2CodecTests {
  @Test func streamMapAgreesWithADictionaryThroughManyChanges() {
    var map = StreamIDMap<Int>()
    var reference: [Int32: Int] = [:]
    var generator = SystemRandomNumberGenerator()
    for step in 0..<20_000 {
      // Odd IDs from a sliding range, as a connection's streams come and go.
      let id = Int32(2 * (step / 4 + Int.random(in: 0..<200, using: &generator)) + 1)
      switch Int.random(in: 0..<3, using: &generator) {
      case 0, 1:
        map[HTTP2StreamID(id)] = step
        reference[id] = step
      default:
        #expect(map.removeValue(forKey: HTTP2StreamID(id)) == reference.removeValue(forKey: id))
      }
      #expect(map.count == reference.count)
    }
    for id in Int32(1)...Int32(12_000) where id % 2 == 1 {
      #expect(map[HTTP2StreamID(id)] == reference[id])
    }
    #expect(Set(map.ids.map { Int32($0) }) == Set(reference.keys))
  }

  @Test func headerBlocksDecodeToTheSameHeaders() throws {
    var headers: HPACKHeaders = [
      ":status": "200", ":method": "POST", ":path": "/bindu.grpc.AgentHandler/HandleMessages", ":scheme": "https",
      "content-type": "application/grpc", "grpc-status": "0", "grpc-message": "caf%C3%A9", "empty": "",
      "long": String(repeating: "x", count: 300), "accept-encoding": "gzip, deflate", "content-length": "",
    ]
    headers.add(name: "authorization", value: "secret", indexing: .neverIndexed)
    var block = ByteBuffer()
    HeaderBlockEncoder.encode(headers, to: &block)
    var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
    let decoded = try decoder.decodeHeaders(from: &block)
    #expect(decoded.map { "\($0.name): \($0.value)" } == headers.map { "\($0.name): \($0.value)" })
    #expect(decoded.map(\.indexable).last == .neverIndexed)
  }

  @Test func staticTableEntriesAreIndexedWholeOrByName() {
    #expect(HeaderBlockEncoder.staticIndex(name: ":status", value: "200") == (8, 8))
    #expect(HeaderBlockEncoder.staticIndex(name: ":status", value: "503") == (8, nil))
    #expect(HeaderBlockEncoder.staticIndex(name: ":path", value: "/index.html") == (4, 5))
    #expect(HeaderBlockEncoder.staticIndex(name: "content-type", value: "application/grpc") == (31, nil))
    #expect(HeaderBlockEncoder.staticIndex(name: "grpc-status", value: "0") == (nil, nil))
    #expect(HeaderBlockEncoder.staticIndex(name: String(repeating: "n", count: 40), value: "") == (nil, nil))
  }
}
