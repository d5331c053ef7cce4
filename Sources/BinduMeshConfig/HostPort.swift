import Foundation

/// A `host:port` pair, as written in config files, flags and registrations.
///
/// IPv6 hosts are written in brackets: `[::1]:3775`. The host is kept without brackets.
package struct HostPort: Sendable, Hashable, CustomStringConvertible {
  /// A host name or an IP address literal (IPv6 without brackets).
  package var host: String
  /// A TCP port, 0 to pick a free one when listening.
  package var port: Int

  /// Creates a pair from its parts.
  package init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  /// Parses `host:port`, `[v6]:port`; returns `nil` when the text is not one.
  package init?(parsing text: String) {
    let text = text.trimmingCharacters(in: .whitespaces)
    let host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
      guard let close = text.firstIndex(of: "]") else { return nil }
      host = text[text.index(after: text.startIndex)..<close]
      let rest = text[text.index(after: close)...]
      guard rest.hasPrefix(":") else { return nil }
      portText = rest.dropFirst()
    } else {
      guard let colon = text.lastIndex(of: ":") else { return nil }
      host = text[..<colon]
      portText = text[text.index(after: colon)...]
      if host.contains(":") { return nil }  // an IPv6 literal must be bracketed
    }
    guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }),
      let port = Int(portText), (0...65535).contains(port)
    else { return nil }
    self.host = String(host)
    self.port = port
  }

  /// `host:port`, with brackets around an IPv6 host.
  package var description: String {
    host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
  }

  /// Whether the host names this machine only (`localhost`, `127.0.0.0/8`, `::1`, and
  /// `127.0.0.0/8` mapped into IPv6).
  package var isLoopback: Bool {
    host == "localhost" || host.hasPrefix("127.") || host == "::1" || host.hasPrefix("::ffff:127.")
  }

  /// Whether the host is an IPv4 or IPv6 address rather than a name.
  package var isIPAddress: Bool { isIPv4Address || host.contains(":") }

  /// Whether the host is an IPv4 address such as `10.0.0.2`.
  package var isIPv4Address: Bool {
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts.allSatisfy { $0.count <= 3 && UInt8($0) != nil }
  }

  /// Whether the host is a wildcard address (`0.0.0.0`, `::`).
  package var isWildcard: Bool {
    host == "0.0.0.0" || host == "::" || host == "[::]"
  }
}
