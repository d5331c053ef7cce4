import NIOCore
import NIOHPACK

/// Decodes HPACK header blocks (RFC 7541) from one peer, keeping that peer's dynamic table.
///
/// The table holds decoded strings, so a header the peer sends by index (most of a gRPC call's,
/// after the first) costs no decoding and no allocation: the list shares the table's strings.
public struct HeaderBlockDecoder: Sendable {
  /// Why a header block is refused.
  public enum Failure: Error {
    /// The block breaks HPACK: the connection's decoding state is lost (COMPRESSION_ERROR).
    case malformed(String)
    /// The block decoded, but its list is larger than this side accepts: the stream is refused,
    /// the connection goes on.
    case tooLarge(Int)
  }

  /// Entries oldest first; the newest is index 62.
  private var table = CircularBuffer<(name: String, value: String)>(initialCapacity: 16)
  private var tableSize = 0
  private var maxTableSize: Int
  /// The most the peer may set the table to: this side's SETTINGS_HEADER_TABLE_SIZE.
  private let tableSizeLimit: Int
  private let maxHeaderListSize: Int
  /// The last few short Huffman-coded literals and their decoding.
  private var recentHuffmanStrings: [(encoded: [UInt8], decoded: String)] = Array(repeating: ([], ""), count: 4)
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
    while let first = block.getInteger(at: block.readerIndex, as: UInt8.self) {
      let name: String
      let value: String
      let indexing: HPACKIndexing
      switch first {
      case 0x80...:  // indexed field
        (name, value) = try entry(at: try readInteger(&block, prefix: 7))
        indexing = .indexable
      case 0x40...:  // literal with incremental indexing
        (name, value) = try readLiteral(&block, prefix: 6)
        insert(name: name, value: value)
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
        (name, value) = try readLiteral(&block, prefix: 4)
      }
      fieldSeen = true
      listSize += name.utf8.count + value.utf8.count + 32
      // Past the limit the rest is still decoded (the table must stay in step with the peer's),
      // but nothing more is kept: the list is refused at the end.
      if listSize <= maxHeaderListSize { headers.add(name: name, value: value, indexing: indexing) }
    }
    guard listSize <= maxHeaderListSize else { throw .tooLarge(listSize) }
    return headers
  }

  private func entry(at index: Int) throws(Failure) -> (name: String, value: String) {
    if index >= 1 && index <= HPACKStaticTable.entries.count { return HPACKStaticTable.entries[index - 1] }
    let age = index - HPACKStaticTable.entries.count - 1
    guard age >= 0, age < table.count else { throw .malformed("header index \(index) is not in the table") }
    return table[table.index(table.startIndex, offsetBy: table.count - 1 - age)]
  }

  private mutating func readLiteral(_ block: inout ByteBuffer, prefix: Int) throws(Failure) -> (name: String, value: String) {
    let nameIndex = try readInteger(&block, prefix: prefix)
    guard nameIndex == 0 else { return (try entry(at: nameIndex).name, try readString(&block)) }
    let name = try readString(&block)
    guard name.utf8.allSatisfy({ $0 < 0x80 }) else { throw .malformed("a header name that is not ASCII") }
    return (name, try readString(&block))
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

  private mutating func readString(_ block: inout ByteBuffer) throws(Failure) -> String {
    guard let first = block.getInteger(at: block.readerIndex, as: UInt8.self) else {
      throw .malformed("a header block ends before a string")
    }
    let length = try readInteger(&block, prefix: 7)
    guard var bytes = block.readSlice(length: length) else { throw .malformed("a string runs past its header block") }
    guard first & 0x80 != 0 else { return bytes.readString(length: length)! }
    return try bytes.withUnsafeReadableBytes { raw throws(Failure) in
      // A peer that sends a value as a literal sends the same one call after call.
      if let known = recentHuffmanStrings.first(where: { $0.encoded.elementsEqual(raw) }) { return known.decoded }
      let decoded: String
      do {
        decoded = try HPACKHuffman.decode(raw)
      } catch {
        throw .malformed("a malformed Huffman-coded string")
      }
      if raw.count <= 64 {
        recentHuffmanStrings[nextRecentHuffmanString] = (Array(raw), decoded)
        nextRecentHuffmanString = (nextRecentHuffmanString + 1) % recentHuffmanStrings.count
      }
      return decoded
    }
  }

  private mutating func insert(name: String, value: String) {
    let size = name.utf8.count + value.utf8.count + 32
    evict(toFit: size)
    guard size <= maxTableSize else { return }  // larger than the table: it empties it (RFC 7541 §4.4)
    table.append((name, value))
    tableSize += size
  }

  private mutating func evict(toFit size: Int) {
    while tableSize + size > maxTableSize, let oldest = table.popFirst() {
      tableSize -= oldest.name.utf8.count + oldest.value.utf8.count + 32
    }
  }
}
