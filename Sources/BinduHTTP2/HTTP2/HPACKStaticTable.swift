/// HPACK's static table (RFC 7541 Appendix A), for the header block encoder and decoder.
enum HPACKStaticTable {
  /// The static table's index of `name`, and of `name` with `value` when it holds both.
  static func index(name: String, value: String) -> (name: Int?, whole: Int?) {
    let length = name.utf8.count
    guard length < namesByLength.count else { return (nil, nil) }
    for (candidate, index) in namesByLength[length] where candidate == name {
      // Entries with values follow their name's first entry in the table.
      var entry = index
      while entry <= entries.count && entries[entry - 1].name == name {
        if entries[entry - 1].value == value { return (index, entry) }
        entry += 1
      }
      return (index, nil)
    }
    return (nil, nil)
  }

  /// RFC 7541 Appendix A: entry `i` is at `i - 1`.
  static let entries: [(name: String, value: String)] = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
  ]

  /// The first index of each distinct name, grouped by the name's length (no hashing to find one).
  private static let namesByLength: [[(name: String, index: Int)]] = {
    var byLength = [[(name: String, index: Int)]](repeating: [], count: 28)
    for (offset, entry) in entries.enumerated() where !byLength[entry.name.utf8.count].contains(where: { $0.name == entry.name }) {
      byLength[entry.name.utf8.count].append((entry.name, offset + 1))
    }
    return byLength
  }()
}
