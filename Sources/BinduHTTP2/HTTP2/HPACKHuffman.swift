/// HPACK's Huffman code (RFC 7541 Appendix B), decoded as the canonical code it is: the codes
/// of one length are consecutive and follow those of shorter lengths in symbol order, so each
/// symbol's length is all the table needs.
enum HPACKHuffman {
  /// Why a Huffman-coded string is refused (RFC 7541 §5.2).
  struct DecodingError: Error {}

  /// Decodes a Huffman-coded string literal.
  static func decode(_ bytes: UnsafeRawBufferPointer) throws(DecodingError) -> (string: String, octets: Int) {
    var failed = false
    var octets = 0
    let string = String(unsafeUninitializedCapacity: bytes.count * 8 / 5 + 1) { out in
      var accumulator: UInt64 = 0
      var bits = 0
      var written = 0
      for byte in bytes {
        accumulator = accumulator << 8 | UInt64(byte)
        bits += 8
        // Take every whole symbol now in the accumulator.
        decoding: while bits >= shortest {
          for length in shortest...min(bits, longest) {
            let code = UInt32(truncatingIfNeeded: accumulator >> UInt64(bits - length)) & ((1 << UInt32(length)) - 1)
            let offset = Int(code) &- Int(firstCode[length])
            guard offset >= 0, offset < count[length] else { continue }
            let symbol = symbols[firstSymbol[length] + offset]
            guard symbol < 256 else {  // EOS inside a string
              failed = true
              return 0
            }
            out[written] = UInt8(symbol)
            written += 1
            bits -= length
            accumulator &= (1 << UInt64(bits)) - 1
            continue decoding
          }
          break  // more bits needed
        }
      }
      // What is left must be padding: under 8 bits, all ones (a prefix of EOS).
      if bits >= 8 || accumulator != (1 << UInt64(bits)) - 1 { failed = true }
      octets = written
      return written
    }
    if failed { throw DecodingError() }
    return (string, octets)
  }

  private static let shortest = 5
  private static let longest = 30

  /// Each symbol's code length; symbol 256 is EOS.
  private static let codeLengths: [Int] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6,
    6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5,
    6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24,
    23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21,
    23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26,
    26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21,
    26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26,
    26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
  ]

  /// Per code length: the first code, how many codes, and where their symbols start in
  /// ``symbols``.
  private static let (firstCode, count, firstSymbol, symbols): ([UInt32], [Int], [Int], [UInt16]) = {
    var firstCode = [UInt32](repeating: 0, count: longest + 1)
    var count = [Int](repeating: 0, count: longest + 1)
    var firstSymbol = [Int](repeating: 0, count: longest + 1)
    let symbols = (0..<codeLengths.count).sorted { (codeLengths[$0], $0) < (codeLengths[$1], $1) }.map(UInt16.init)
    var code: UInt32 = 0
    var length = 0
    for (position, symbol) in symbols.enumerated() {
      let symbolLength = codeLengths[Int(symbol)]
      if position > 0 { code += 1 }
      if symbolLength != length {
        code <<= UInt32(symbolLength - length)
        length = symbolLength
        firstCode[length] = code
        firstSymbol[length] = position
      }
      count[length] += 1
    }
    return (firstCode, count, firstSymbol, symbols)
  }()
}
