import NIOHPACK

/// Whether a caller's header list may be forwarded to a replica: RFC 9113 §8.2–8.3 (field names
/// and values, pseudo-headers, connection-specific fields) and what a gRPC request must carry.
///
/// A malformed header list (§8.1.1) is refused on its own stream and never reaches a replica: a
/// replica's HTTP/2 stack may close its whole connection over it, failing every other caller's
/// calls on that connection. A well-formed request that is not gRPC's (another method, another
/// content-type) is answered by the mesh with an HTTP status, as gRPC's servers do. The checks
/// read the strings in place and allocate nothing.
enum RequestHeaderCheck {
  /// What becomes of a request's header list.
  enum Verdict: Equatable {
    /// A gRPC request: forwarded; `contentLength` is its `content-length`, if it has one.
    case forward(contentLength: Int?)
    /// Malformed (RFC 9113 §8.1.1): the stream is reset with `PROTOCOL_ERROR`.
    case malformed(String)
    /// Well-formed but not a gRPC call: answered with this HTTP status and no forwarding.
    case answer(LocalAnswer)
  }

  /// What to do with a request's header list (the first HEADERS of a stream).
  static func request(_ headers: HPACKHeaders) -> Verdict {
    var seenRegular = false
    var method: Substring?
    var scheme = false
    var path = false
    var authority = false
    var contentType: Bool?
    var contentLength: Int?
    for (name, value, _) in headers {
      if let problem = field(name: name, value: value) { return .malformed(problem) }
      if name.utf8.first == UInt8(ascii: ":") {
        if seenRegular { return .malformed("pseudo-header \(name) after a regular field") }
        switch name {
        case ":method":
          if method != nil { return .malformed("more than one :method") }
          guard !value.isEmpty, value.utf8.allSatisfy(isToken) else { return .malformed(":method is not a token") }
          method = Substring(value)
        case ":scheme":
          if scheme { return .malformed("more than one :scheme") }
          guard value == "http" || value == "https" else { return .malformed(":scheme is neither http nor https") }
          scheme = true
        case ":path":
          if path { return .malformed("more than one :path") }
          guard value.utf8.first == UInt8(ascii: "/") else { return .malformed(":path does not begin with /") }
          path = true
        case ":authority":
          if authority { return .malformed("more than one :authority") }
          authority = true
        default:
          return .malformed("pseudo-header \(name) is not one of a request's")
        }
        continue
      }
      seenRegular = true
      switch name {
      case "content-type":
        if contentType != nil { return .malformed("more than one content-type") }
        contentType = isGRPC(contentType: value)
      case "content-length":
        guard !value.isEmpty, value.utf8.count <= 18,
          value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let length = Int(value)
        else {
          return .malformed("content-length is not a number")
        }
        if let earlier = contentLength, earlier != length { return .malformed("content-length given twice, differently") }
        contentLength = length
      default: break
      }
    }
    guard let method else { return .malformed("no :method") }
    if method == "CONNECT" { return path || scheme ? .malformed("CONNECT with :path or :scheme") : .answer(.methodNotAllowed(head: false)) }
    if !scheme { return .malformed("no :scheme") }
    if !path { return .malformed("no :path") }
    guard method == "POST" else { return .answer(.methodNotAllowed(head: method == "HEAD")) }
    guard contentType == true else { return .answer(.unsupportedMediaType) }
    return .forward(contentLength: contentLength)
  }

  /// Why a caller's trailers (a second HEADERS) cannot be forwarded: they must end the stream
  /// and carry no pseudo-header.
  static func trailers(_ headers: HPACKHeaders, endStream: Bool) -> String? {
    guard endStream else { return "a second HEADERS that does not end the stream" }
    for (name, value, _) in headers {
      if let problem = field(name: name, value: value) { return problem }
      if name.utf8.first == UInt8(ascii: ":") { return "pseudo-header \(name) in trailers" }
    }
    return nil
  }

  /// Why one field is malformed (§8.2): an empty name, a character other than a lowercase token
  /// character in the name, NUL, CR or LF in the value, or whitespace around it; a
  /// connection-specific field (§8.2.2), or `te` other than `trailers`.
  static func field(name: String, value: String) -> String? {
    var bytes = name.utf8.makeIterator()
    guard let first = bytes.next() else { return "a field with an empty name" }
    if first != UInt8(ascii: ":") && !isLowercaseToken(first) { return "field name \(printable(name)) is not lowercase" }
    while let byte = bytes.next() {
      guard isLowercaseToken(byte) else { return "field name \(printable(name)) is not lowercase" }
    }
    for byte in value.utf8 where byte == 0 || byte == 0x0A || byte == 0x0D {
      return "field \(printable(name)) has NUL, CR or LF in its value"
    }
    if let head = value.utf8.first, head == 0x20 || head == 0x09 { return "field \(name) has whitespace around its value" }
    if let tail = value.utf8.last, tail == 0x20 || tail == 0x09 { return "field \(name) has whitespace around its value" }
    switch name {
    case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
      return "connection-specific field \(name)"
    case "te" where value != "trailers":
      return "te is not \"trailers\""
    default:
      return nil
    }
  }

  /// `application/grpc`, alone or followed by `+` (a subtype) or `;` (parameters).
  static func isGRPC(contentType value: String) -> Bool {
    let prefix = "application/grpc".utf8
    var bytes = value.utf8.makeIterator()
    for expected in prefix {
      guard let byte = bytes.next(), byte | 0x20 == expected | 0x20 else { return false }
    }
    guard let next = bytes.next() else { return true }
    return next == UInt8(ascii: "+") || next == UInt8(ascii: ";")
  }

  /// RFC 9110's token characters (a method's), letters of either case.
  private static func isToken(_ byte: UInt8) -> Bool {
    isLowercaseToken(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
  }

  /// RFC 9110's token characters, letters lowercase only.
  private static func isLowercaseToken(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
      UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
      UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
      true
    default: false
    }
  }

  /// A name for a log line: at most 64 characters, control characters escaped.
  private static func printable(_ name: String) -> String {
    String(name.unicodeScalars.prefix(64).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) })
  }
}
