import BinduMeshConfig
import Foundation
import Logging
import Synchronization

/// Where the running mesh's registry and admin listeners serve, kept in
/// `state.dir/listening.json` (``fileName``) while it runs, so that whatever started it with
/// port 0 (a supervisor, a sidecar, a test) learns the ports the system picked without reading
/// the log:
///
/// ```json
/// {"admin": "127.0.0.1:40313", "pid": 5120, "registry": "127.0.0.1:39007"}
/// ```
///
/// Each listener is added once it serves, so a reader waits for the ones it needs. The file is
/// replaced whole (a reader never sees half of it) and removed when the mesh stops, unless a
/// process that took over since names itself in it. The pools' callback listeners are in the
/// admin listener's `/pools`.
package final class ListeningAddresses: Sendable {
  /// The file's name in the state folder.
  package static let fileName = "listening.json"

  /// The file's path.
  package let path: String
  private let known: Mutex<[String: String]>
  private let pid = ProcessInfo.processInfo.processIdentifier

  /// The file of the mesh whose state folder is `stateDir`.
  package init(stateDir: String) {
    path = URL(fileURLWithPath: stateDir).appendingPathComponent(Self.fileName).path
    known = Mutex([:])
  }

  /// Adds the listener `name` (`registry`, `admin`) serving at `address` and writes the file.
  /// A file that cannot be written is logged: the mesh serves on without it.
  package func serving(_ name: String, at address: HostPort, logger: Logger) {
    // Written under the lock: two listeners ready at once must not write their views out of order.
    let failure = known.withLock { known -> (any Error)? in
      known[name] = address.description
      var fields: [String: any Sendable] = known
      fields["pid"] = Int(pid)
      do {
        let data = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        return nil
      } catch {
        return error
      }
    }
    if let failure {
      logger.warning("cannot write the listening addresses", metadata: ["mesh.file": "\(path)", "error": "\(failure)"])
    }
  }

  /// Removes a file left by a mesh that did not stop cleanly (killed): run at a start that takes
  /// over from no one, before a listener serves, so the file never names the ports of a mesh gone.
  package func removeStale() {
    try? FileManager.default.removeItem(atPath: path)
  }

  /// Removes the file, unless another process (one that took over) wrote it since.
  package func remove() {
    guard let data = FileManager.default.contents(atPath: path),
      let fields = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      fields["pid"] as? Int == Int(pid)
    else { return }
    try? FileManager.default.removeItem(atPath: path)
  }
}
