/// A configuration that cannot be used: names the source, the key and what was expected.
///
/// ```
/// Config/bindu-mesh.yaml:12:5: pools[0].listen: expected host:port, got "nowhere"
/// ```
package struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The file (or `--flag`) the value came from.
  package var source: String
  /// `line:column` in the file, when known.
  package var position: String?
  /// The dotted key path, such as `pools[0].listen`.
  package var key: String
  /// What is wrong and what was expected.
  package var message: String

  /// Creates an error.
  package init(source: String, position: String? = nil, key: String, message: String) {
    self.source = source
    self.position = position
    self.key = key
    self.message = message
  }

  package var description: String {
    let location = position.map { "\(source):\($0)" } ?? source
    return key.isEmpty ? "\(location): \(message)" : "\(location): \(key): \(message)"
  }
}
