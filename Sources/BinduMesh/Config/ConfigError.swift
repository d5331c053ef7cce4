/// A configuration that cannot be used: names the source, the key and what was expected.
///
/// ```
/// Config/bindu-mesh.yaml:12:5: pools[0].listen: expected host:port, got "nowhere"
/// ```
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The file (or `--flag`) the value came from.
  public var source: String
  /// `line:column` in the file, when known.
  public var position: String?
  /// The dotted key path, such as `pools[0].listen`.
  public var key: String
  /// What is wrong and what was expected.
  public var message: String

  /// Creates an error.
  public init(source: String, position: String? = nil, key: String, message: String) {
    self.source = source
    self.position = position
    self.key = key
    self.message = message
  }

  public var description: String {
    let location = position.map { "\(source):\($0)" } ?? source
    return key.isEmpty ? "\(location): \(message)" : "\(location): \(key): \(message)"
  }
}
