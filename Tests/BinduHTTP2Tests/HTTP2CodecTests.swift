import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduHTTP2

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
    #expect(HPACKStaticTable.index(name: ":status", value: "200") == (8, 8))
    #expect(HPACKStaticTable.index(name: ":status", value: "503") == (8, nil))
    #expect(HPACKStaticTable.index(name: ":path", value: "/index.html") == (4, 5))
    #expect(HPACKStaticTable.index(name: "content-type", value: "application/grpc") == (31, nil))
    #expect(HPACKStaticTable.index(name: "grpc-status", value: "0") == (nil, nil))
    #expect(HPACKStaticTable.index(name: String(repeating: "n", count: 40), value: "") == (nil, nil))
  }

  @Test func decoderFollowsAPeersTableAndHuffmanCodeThroughManyBlocks() throws {
    // The peer: NIOHPACK's encoder, with Huffman coding and its dynamic table.
    var encoder = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: true)
    var decoder = HeaderBlockDecoder(maxHeaderListSize: 1 << 20)
    var generator = SystemRandomNumberGenerator()
    let names = [":path", "content-type", "grpc-timeout", "x-trace", "user-agent", "x-binary-bin", "te"]
    for block in 0..<500 {
      var headers = HPACKHeaders()
      for _ in 0..<Int.random(in: 1...8, using: &generator) {
        let name = names.randomElement(using: &generator)!
        // Values repeat (table hits) or are new (literals, evictions); every byte value occurs.
        let value = Bool.random(using: &generator)
          ? "v\(Int.random(in: 0..<20, using: &generator))"
          : String(decoding: (0..<Int.random(in: 0...300, using: &generator)).map { _ in UInt8.random(in: 0x20...0x7E, using: &generator) }, as: UTF8.self)
        let indexing: HPACKIndexing = [.indexable, .nonIndexable, .neverIndexed].randomElement(using: &generator)!
        headers.add(name: name, value: value, indexing: indexing)
      }
      if block % 97 == 0 { try encoder.setDynamicTableSize([0, 512, 4096].randomElement(using: &generator)!) }
      var bytes = ByteBuffer()
      try encoder.encode(headers: headers, to: &bytes)
      let decoded = try decoder.decode(&bytes)
      #expect(decoded.map { "\($0.name): \($0.value)" } == headers.map { "\($0.name): \($0.value)" })
    }
  }

  @Test func decoderReadsTheRFCsHuffmanExample() throws {
    // RFC 7541 C.4.1.
    var block = ByteBuffer(bytes: [
      0x82, 0x86, 0x84, 0x41, 0x8C, 0xF1, 0xE3, 0xC2, 0xE5, 0xF2, 0x3A, 0x6B, 0xA0, 0xAB, 0x90, 0xF4, 0xFF,
    ])
    var decoder = HeaderBlockDecoder(maxHeaderListSize: 16_384)
    let headers = try decoder.decode(&block)
    #expect(headers.map { "\($0.name): \($0.value)" } == [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com"])
  }

  @Test func decoderRefusesMalformedBlocks() {
    let malformed: [[UInt8]] = [
      [0xBE],  // index 62 with an empty table
      [0x80],  // index 0
      [0x3F, 0xE2, 0x1F],  // a table size of 4097, over the limit
      [0x00, 0x85, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00],  // Huffman with padding of over 7 bits / EOS
      [0x00, 0x81, 0x00, 0x00],  // Huffman padding that is not all ones
      [0x40, 0x0A, 0x61],  // a string running past the block
      [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],  // an integer without end
    ]
    for bytes in malformed {
      var block = ByteBuffer(bytes: bytes)
      var decoder = HeaderBlockDecoder(maxHeaderListSize: 16_384)
      #expect(throws: HeaderBlockDecoder.Failure.self, "\(bytes)") { try decoder.decode(&block) }
    }
  }

  @Test func theTableCountsTheOctetsSentEvenWhereTheyAreNotUTF8() throws {
    // A table of 43 octets takes an entry of name "a" and ten 0xFF octets (1 + 10 + 32), whose
    // string holds ten U+FFFD (30 octets in UTF-8): counting those, it would not fit.
    var decoder = HeaderBlockDecoder(tableSizeLimit: 43, maxHeaderListSize: 16_384)
    var first = ByteBuffer(bytes: [0x40, 0x01, 0x61, 0x0A] + Array(repeating: 0xFF, count: 10))
    _ = try decoder.decode(&first)
    var second = ByteBuffer(bytes: [0xBE])  // index 62: the entry just added
    let headers = try decoder.decode(&second)
    #expect(headers.first?.name == "a")
    #expect(headers.first?.value == String(repeating: "\u{FFFD}", count: 10))
  }

  @Test func aNameThatIsNotASCIIRefusesItsBlockAndKeepsTheTableInStep() throws {
    var decoder = HeaderBlockDecoder(maxHeaderListSize: 16_384)
    // With incremental indexing: the entry is added, so the peer's next reference finds it.
    var block = ByteBuffer(bytes: [0x40, 0x02, 0xC3, 0xA9, 0x01, 0x61])
    #expect(throws: HeaderBlockDecoder.Failure.self) { try decoder.decode(&block) }
    var byIndex = ByteBuffer(bytes: [0xBE])
    #expect(throws: HeaderBlockDecoder.Failure.self) { try decoder.decode(&byIndex) }
    var next = ByteBuffer(bytes: [0x82])  // :method GET
    #expect(try decoder.decode(&next).first?.value == "GET")
  }
}
