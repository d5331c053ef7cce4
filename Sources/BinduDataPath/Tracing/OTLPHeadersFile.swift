import BinduMeshConfig
import Foundation

/// The headers sent with every OTLP export, from a file: one `name: value` per line, blank
/// lines and lines starting with `#` skipped (`tracing.headers_file`).
struct OTLPHeadersFile: Sendable {
  let path: String

  /// Checks the file once, so that a bad one stops the start with its line.
  init(path: String) throws {
    self.path = path
    _ = try read()
  }

  /// The headers as the file says now.
  ///
  /// - Throws: ``ConfigError`` naming the file and line.
  func read() throws -> [(String, String)] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigError(source: path, key: "tracing.headers_file", message: "cannot read the file")
    }
    return try Self.parse(String(decoding: data, as: UTF8.self), source: path)
  }

  /// The headers in `text`; `source` names it in errors.
  static func parse(_ text: String, source: String) throws -> [(String, String)] {
    var headers: [(String, String)] = []
    for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
      if line.isEmpty || line.hasPrefix("#") { continue }
      guard let colon = line.firstIndex(of: ":") else {
        throw ConfigError(
          source: source, position: "\(index + 1)", key: "tracing.headers_file", message: "expected \"name: value\"")
      }
      let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
      let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
      let token = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "!#$%&'*+-.^_`|~"))
      guard !name.isEmpty, name.unicodeScalars.allSatisfy(token.contains) else {
        throw ConfigError(
          source: source, position: "\(index + 1)", key: "tracing.headers_file", message: "\"\(name)\" is not a header name")
      }
      headers.append((name, value))
    }
    return headers
  }
}
