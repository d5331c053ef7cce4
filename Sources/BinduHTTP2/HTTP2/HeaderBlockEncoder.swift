import NIOCore
import NIOHPACK

/// Encodes header lists as HPACK (RFC 7541) without the dynamic table or Huffman coding: a
/// header that the static table holds whole is its index, any other a literal "without
/// indexing" (or "never indexed", as the header asks) naming the static table's entry when it
/// has the name. Cheap to write, and nothing to keep in step with the peer's table: a proxy
/// that forwards on loopback or within a cluster trades a few bytes for no lookups.
public enum HeaderBlockEncoder {
  /// Appends the header block of `headers` to `buffer`, in one access to the buffer.
  public static func encode(_ headers: HPACKHeaders, to buffer: inout ByteBuffer) {
    // Each header takes at most its bytes, two integers of up to 6 bytes and a flag byte.
    let bound = headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 13 }
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { raw in
      var out = HPACKWriter(bytes: raw)
      for (name, value, indexing) in headers {
        let (nameIndex, wholeIndex) = HPACKStaticTable.index(name: name, value: value)
        if let wholeIndex {
          out.integer(wholeIndex, prefix: 7, flags: 0x80)
          continue
        }
        let flags: UInt8 = indexing == .neverIndexed ? 0x10 : 0x00
        if let nameIndex {
          out.integer(nameIndex, prefix: 4, flags: flags)
        } else {
          out.byte(flags)
          out.string(name)
        }
        out.string(value)
      }
      return out.count
    }
  }
}

/// Writes HPACK's integers and string literals into memory sized for them.
private struct HPACKWriter {
  let bytes: UnsafeMutableRawBufferPointer
  private(set) var count = 0

  init(bytes: UnsafeMutableRawBufferPointer) {
    self.bytes = bytes
  }

  mutating func byte(_ value: UInt8) {
    bytes[count] = value
    count += 1
  }

  /// An integer with a `prefix`-bit prefix, the first byte's other bits `flags` (RFC 7541 §5.1).
  mutating func integer(_ value: Int, prefix: Int, flags: UInt8) {
    let limit = (1 << prefix) - 1
    guard value >= limit else {
      byte(flags | UInt8(value))
      return
    }
    byte(flags | UInt8(limit))
    var rest = value - limit
    while rest >= 0x80 {
      byte(UInt8(rest & 0x7F | 0x80))
      rest >>= 7
    }
    byte(UInt8(rest))
  }

  /// A string literal without Huffman coding (RFC 7541 §5.2).
  mutating func string(_ string: String) {
    var string = string
    string.withUTF8 { utf8 in
      integer(utf8.count, prefix: 7, flags: 0)
      UnsafeMutableRawBufferPointer(rebasing: bytes[count...]).copyMemory(from: UnsafeRawBufferPointer(utf8))
      count += utf8.count
    }
  }
}
