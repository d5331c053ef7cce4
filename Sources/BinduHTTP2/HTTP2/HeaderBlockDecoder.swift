import NIOCore
import NIOHPACK

/// Decodes HPACK header blocks (RFC 7541) from one peer, keeping that peer's dynamic table.
///
/// The table holds decoded strings, so a header the peer sends by index (most of a gRPC call's,
/// after the first) costs no decoding and no allocation: the list shares the table's strings.
/// Sizes (the table's and the list's) count the octets the peer sent, as RFC 7541 §4.1 does,
/// even where they are not UTF-8 and the string holds U+FFFD instead, so the table stays in
/// step with the peer's.
public struct HeaderBlockDecoder: Sendable {
  /// Why a header block is refused.
  public enum Failure: Error {
    /// The block breaks HPACK: the connection's decoding state is lost (COMPRESSION_ERROR).
    case malformed(String)
    /// The block decoded, but its list is larger than this side accepts: the stream is refused,
    /// the connection goes on.
    case tooLarge(Int)
    /// The block decoded, but a field name is not ASCII (so not a field name at all, RFC 9113
    /// §8.2.1): the stream is refused, the connection goes on.
    case invalidName
  }

  /// A field as decoded, with the octets its name and value had on the wire, and whether its
  /// name is ASCII.
  typealias Field = (name: String, value: String, octets: Int, asciiName: Bool)

  /// Entries oldest first; the newest is index 62. `nameOctets` serves a literal that takes the
  /// entry's name.
  private var table = CircularBuffer<(field: Field, nameOctets: Int)>(initialCapacity: 16)
  private var tableSize = 0
  private var maxTableSize: Int
  /// The most the peer may set the table to: this side's SETTINGS_HEADER_TABLE_SIZE.
  private let tableSizeLimit: Int
  private let maxHeaderListSize: Int
  /// The last few short Huffman-coded literals and their decoding.
  private var recentHuffmanStrings: [(encoded: [UInt8], decoded: String, octets: Int)] = Array(
    repeating: ([], "", 0), count: 4)
  private var nextRecentHuffmanString = 0

  public init(tableSizeLimit: Int = 4096, maxHeaderListSize: Int) {
    self.maxTableSize = tableSizeLimit
    self.tableSizeLimit = tableSizeLimit
    self.maxHeaderListSize = maxHeaderListSize
  }

  /// Decodes a whole header block.
  public mutating func decode(_ block: inout ByteBuffer) throws(Failure) -> HPACKHeaders {
    var headers = HPACKHeaders()
    headers.reserveCapacity(8)  // a gRPC call's headers, in one allocation
    var listSize = 0
    var fieldSeen = false
    var invalidName = false
    while let first = block.getInteger(at: block.readerIndex, as: UInt8.self) {
      let field: Field
      let indexing: HPACKIndexing
      switch first {
      case 0x80...:  // indexed field
        field = try entry(at: try readInteger(&block, prefix: 7)).field
        indexing = .indexable
      case 0x40...:  // literal with incremental indexing
        let (literal, nameOctets) = try readLiteral(&block, prefix: 6)
        field = literal
        insert(field, nameOctets: nameOctets)
        indexing = .indexable
      case 0x20...:  // dynamic table size update: only before the block's first field (RFC 7541 §4.2)
        guard !fieldSeen else { throw .malformed("a dynamic table size update after a header field") }
        let size = try readInteger(&block, prefix: 5)
        guard size <= tableSizeLimit else { throw .malformed("table size \(size) over the limit of \(tableSizeLimit)") }
        maxTableSize = size
        evict(toFit: 0)
        continue
      default:  // literal without indexing (0000), never indexed (0001)
        indexing = first & 0x10 != 0 ? .neverIndexed : .nonIndexable
        field = try readLiteral(&block, prefix: 4).field
      }
      fieldSeen = true
      listSize += field.octets + 32
      // Past the limit the rest is still decoded (the table must stay in step with the peer's),
      // but nothing more is kept: the list is refused at the end.
      guard field.asciiName else {
        invalidName = true
        continue
      }
      if listSize <= maxHeaderListSize { headers.add(name: field.name, value: field.value, indexing: indexing) }
    }
    guard listSize <= maxHeaderListSize else { throw .tooLarge(listSize) }
    guard !invalidName else { throw .invalidName }
    return headers
  }

  private func entry(at index: Int) throws(Failure) -> (field: Field, nameOctets: Int) {
    if index >= 1 && index <= HPACKStaticTable.entries.count {
      let (name, value) = HPACKStaticTable.entries[index - 1]  // ASCII
      return ((name, value, name.utf8.count + value.utf8.count, true), name.utf8.count)
    }
    let age = index - HPACKStaticTable.entries.count - 1
    guard age >= 0, age < table.count else { throw .malformed("header index \(index) is not in the table") }
    return table[table.index(table.startIndex, offsetBy: table.count - 1 - age)]
  }

  /// A literal field, and the octets of its name.
  private mutating func readLiteral(_ block: inout ByteBuffer, prefix: Int) throws(Failure) -> (field: Field, nameOctets: Int) {
    let nameIndex = try readInteger(&block, prefix: prefix)
    let name: (string: String, octets: Int)
    let asciiName: Bool
    if nameIndex == 0 {
      name = try readString(&block)
      asciiName = name.string.utf8.allSatisfy { $0 < 0x80 }
    } else {
      let known = try entry(at: nameIndex)
      name = (known.field.name, known.nameOctets)
      asciiName = known.field.asciiName
    }
    let value = try readString(&block)
    return ((name.string, value.string, name.octets + value.octets, asciiName), name.octets)
  }

  private func readInteger(_ block: inout ByteBuffer, prefix: Int) throws(Failure) -> Int {
    let limit = (1 << prefix) - 1
    guard let first = block.readInteger(as: UInt8.self) else { throw .malformed("a header block ends inside an integer") }
    var value = Int(first) & limit
    guard value == limit else { return value }
    var shift = 0
    while true {
      guard let byte = block.readInteger(as: UInt8.self) else { throw .malformed("a header block ends inside an integer") }
      value += Int(byte & 0x7F) << shift
      guard byte & 0x80 != 0 else { return value }
      shift += 7
      guard shift <= 28 else { throw .malformed("an integer of over 2^35") }
    }
  }

  /// A string literal, and the octets it stands for.
  private mutating func readString(_ block: inout ByteBuffer) throws(Failure) -> (string: String, octets: Int) {
    guard let first = block.getInteger(at: block.readerIndex, as: UInt8.self) else {
      throw .malformed("a header block ends before a string")
    }
    let length = try readInteger(&block, prefix: 7)
    guard var bytes = block.readSlice(length: length) else { throw .malformed("a string runs past its header block") }
    guard first & 0x80 != 0 else { return (bytes.readString(length: length)!, length) }
    return try bytes.withUnsafeReadableBytes { raw throws(Failure) in
      // A peer that sends a value as a literal sends the same one call after call.
      if let known = recentHuffmanStrings.first(where: { $0.encoded.elementsEqual(raw) }) {
        return (known.decoded, known.octets)
      }
      let decoded: (string: String, octets: Int)
      do {
        decoded = try HPACKHuffman.decode(raw)
      } catch {
        throw .malformed("a malformed Huffman-coded string")
      }
      if raw.count <= 64 {
        recentHuffmanStrings[nextRecentHuffmanString] = (Array(raw), decoded.string, decoded.octets)
        nextRecentHuffmanString = (nextRecentHuffmanString + 1) % recentHuffmanStrings.count
      }
      return decoded
    }
  }

  private mutating func insert(_ field: Field, nameOctets: Int) {
    let size = field.octets + 32
    evict(toFit: size)
    guard size <= maxTableSize else { return }  // larger than the table: it empties it (RFC 7541 §4.4)
    table.append((field, nameOctets))
    tableSize += size
  }

  private mutating func evict(toFit size: Int) {
    while tableSize + size > maxTableSize, let oldest = table.popFirst() {
      tableSize -= oldest.field.octets + 32
    }
  }
}
