import Logging

extension Logger {
  /// A copy with one more metadata entry.
  package func with(_ key: String, _ value: String) -> Logger {
    var copy = self
    copy[metadataKey: key] = "\(value)"
    return copy
  }
}
