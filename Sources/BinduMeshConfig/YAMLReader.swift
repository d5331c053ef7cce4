import Foundation
import Yams

/// A YAML node with the key path that reached it, so every error names the file, line and key.
struct YAMLReader {
  let node: Node
  let path: String
  let source: String
  /// Folder relative file names start from.
  var baseDirectory: String = "."

  func error(_ message: String) -> ConfigError {
    ConfigError(source: source, position: node.mark.map { "\($0.line):\($0.column)" }, key: path, message: message)
  }

  private func child(_ node: Node, _ component: String) -> YAMLReader {
    YAMLReader(node: node, path: path.isEmpty ? component : path + component, source: source, baseDirectory: baseDirectory)
  }

  /// The entries of a mapping; any key outside `keys` is an error that lists the known keys.
  func mapping(keys: [String]) throws -> [String: YAMLReader] {
    guard case .mapping(let mapping) = node else { throw error("expected a mapping of \(keys.joined(separator: ", "))") }
    var entries: [String: YAMLReader] = [:]
    for (key, value) in mapping {
      guard let name = key.string else { throw error("expected string keys") }
      let reader = child(value, path.isEmpty ? name : ".\(name)")
      guard keys.contains(name) else {
        throw YAMLReader(node: key, path: reader.path, source: source, baseDirectory: baseDirectory)
          .error("unknown key (expected one of: \(keys.joined(separator: ", ")))")
      }
      entries[name] = reader
    }
    return entries
  }

  func sequence() throws -> [YAMLReader] {
    guard case .sequence(let sequence) = node else { throw error("expected a list") }
    return sequence.enumerated().map { child($1, "[\($0)]") }
  }

  func string() throws -> String {
    guard case .scalar(let scalar) = node else { throw error("expected a string") }
    return scalar.string
  }

  func strings() throws -> [String] { try sequence().map { try $0.string() } }

  /// A file path, relative ones resolved against the config file's folder.
  func filePath() throws -> String {
    let text = try string()
    guard !text.isEmpty else { throw error("expected a file path") }
    return text.hasPrefix("/") ? text : URL(fileURLWithPath: baseDirectory).appendingPathComponent(text).path
  }

  func int(in range: ClosedRange<Int>) throws -> Int {
    guard let value = node.int else { throw error("expected an integer, got \(describe())") }
    guard range.contains(value) else { throw error("expected \(range.lowerBound)...\(range.upperBound), got \(value)") }
    return value
  }

  func bool() throws -> Bool {
    guard let value = node.bool else { throw error("expected true or false, got \(describe())") }
    return value
  }

  /// `250ms`, `30s`, `5m`, `1h`, or a plain number of seconds.
  func duration() throws -> Duration {
    let text = try string()
    guard let duration = Duration(configText: text), duration > .zero else {
      throw error("expected a positive duration such as 500ms, 30s or 5m, got \(describe())")
    }
    return duration
  }

  /// A duration, or `off` for none.
  func optionalDuration() throws -> Duration? {
    if case .scalar(let scalar) = node, scalar.string == "off" { return nil }
    guard let duration = Duration(configText: try string()), duration > .zero else {
      throw error("expected a positive duration such as 30s, or off, got \(describe())")
    }
    return duration
  }

  func hostPort() throws -> HostPort {
    guard let value = HostPort(parsing: try string()) else {
      throw error("expected host:port (IPv6 as [::1]:port, port 0-65535), got \(describe())")
    }
    return value
  }

  /// A mapping written as YAML, turned into JSON text (sorted keys).
  func json() throws -> String {
    let object = try jsonObject()
    guard object is [String: Any] else { throw error("expected a mapping") }
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
  }

  private func jsonObject() throws -> Any {
    switch node {
    case .mapping(let mapping):
      var object: [String: Any] = [:]
      for (key, value) in mapping {
        guard let name = key.string else { throw error("expected string keys") }
        object[name] = try child(value, ".\(name)").jsonObject()
      }
      return object
    case .sequence:
      return try sequence().map { try $0.jsonObject() }
    case .scalar(let scalar):
      if scalar.style == .plain {
        if node.null != nil { return NSNull() }
        if let value = node.bool { return value }
        if let value = node.int { return value }
        if let value = node.float { return value }
      }
      return scalar.string
    case .alias:
      throw error("aliases are not supported here")
    }
  }

  func describe() -> String {
    if case .scalar(let scalar) = node { return "\"\(scalar.string)\"" }
    if case .mapping = node { return "a mapping" }
    return "a list"
  }
}

extension Duration {
  /// Parses `250ms`, `30s`, `5m`, `1h`, or a plain number of seconds.
  init?(configText text: String) {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    var number = Substring(text.trimmingCharacters(in: .whitespaces))
    var scale = 1.0
    for (suffix, factor) in units where number.hasSuffix(suffix) {
      number = number.dropLast(suffix.count)
      scale = factor
      break
    }
    guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
    self = .nanoseconds(Int64(value * scale * 1e9))
  }
}
