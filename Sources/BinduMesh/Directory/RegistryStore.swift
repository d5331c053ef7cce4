import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// The registry's file, `registry.json` under `state.dir`, replaced whole on every change.
///
/// A save writes the new content to `registry.json.tmp`, `fsync`s it, renames it over
/// `registry.json` and `fsync`s the folder: a crash at any moment leaves either the old file or
/// the new one, never a half-written one. The registry is a few kilobytes written on membership
/// changes only, so one atomic file replace needs no database.
package final class RegistryStore: Sendable {
  /// The folder.
  package let directory: String
  /// The registry's file.
  package let path: String
  private let lastSaved = Mutex<RegistrySnapshot?>(nil)

  /// A store in `directory` (made when missing, at the first ``load()``).
  package init(directory: String) {
    self.directory = directory
    self.path = URL(fileURLWithPath: directory).appendingPathComponent("registry.json").path
  }

  /// Reads the registry; an empty one when there is no file yet.
  ///
  /// - Throws: ``StateError`` naming the file when it cannot be read, is not a registry, or is
  ///   of a format this version does not know.
  package func load() throws(StateError) -> RegistrySnapshot {
    try makeDirectory()
    guard FileManager.default.fileExists(atPath: path) else { return .empty }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw StateError(path: path, reason: "cannot be read")
    }
    let snapshot = try Self.decode(data, path: path)
    lastSaved.withLock { $0 = snapshot }
    return snapshot
  }

  private func makeDirectory() throws(StateError) {
    do {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw StateError(
        path: directory,
        reason: "the folder cannot be made (\(error.localizedDescription)): set state.dir or --state-dir to a writable folder")
    }
  }

  /// Parses a registry file's content.
  static func decode(_ data: Data, path: String) throws(StateError) -> RegistrySnapshot {
    struct Header: Decodable { var format: Int }
    let header: Header
    do {
      header = try JSONDecoder().decode(Header.self, from: data)
    } catch {
      throw StateError(path: path, reason: "not a bindu-mesh registry (\(Self.describe(error))); move it away to start empty")
    }
    guard header.format == RegistrySnapshot.currentFormat else {
      throw StateError(
        path: path,
        reason: "format \(header.format), but this bindu-mesh reads format \(RegistrySnapshot.currentFormat) "
          + "(written by a newer version?); run that version, or move the file away to start empty")
    }
    do {
      return try JSONDecoder().decode(RegistrySnapshot.self, from: data)
    } catch {
      throw StateError(path: path, reason: "damaged (\(Self.describe(error))); move it away to start empty")
    }
  }

  /// Writes `snapshot` atomically, unless it is what the file holds already.
  package func save(_ snapshot: RegistrySnapshot) throws(StateError) {
    try lastSaved.withLock { (last) throws(StateError) in
      guard last != snapshot else { return }
      try makeDirectory()
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      let data: Data
      do { data = try encoder.encode(snapshot) } catch {
        throw StateError(path: path, reason: "cannot be encoded: \(error)")
      }
      try Self.replace(path, with: data)
      last = snapshot
    }
  }

  /// Writes `data` to `path` by write, fsync, rename and folder fsync.
  private static func replace(_ path: String, with data: Data) throws(StateError) {
    let temporary = path + ".tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw StateError(path: temporary, reason: "cannot be written: \(errnoText())") }
    var ok = data.withUnsafeBytes { bytes -> Bool in
      var offset = 0
      while offset < bytes.count {
        let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if written < 0 {
          if errno == EINTR { continue }
          return false
        }
        offset += written
      }
      return true
    }
    ok = ok && fsync(fd) == 0
    let reason = errnoText()
    close(fd)
    guard ok else { throw StateError(path: temporary, reason: "cannot be written: \(reason)") }
    guard rename(temporary, path) == 0 else { throw StateError(path: path, reason: "cannot be replaced: \(errnoText())") }
    let folder = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if folder >= 0 {
      _ = fsync(folder)
      close(folder)
    }
  }

  private static func errnoText() -> String { String(cString: strerror(errno)) }

  private static func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.dataCorrupted(let context): context.debugDescription
    case DecodingError.keyNotFound(let key, _): "no \"\(key.stringValue)\""
    case DecodingError.typeMismatch(_, let context): "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
    case DecodingError.valueNotFound(_, let context): "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
    default: "\(error)"
    }
  }
}

/// The state folder or file cannot be used: names the file and what is wrong.
package struct StateError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The file or folder.
  package var path: String
  /// What is wrong.
  package var reason: String

  package var description: String { "state file \(path): \(reason)" }
}
