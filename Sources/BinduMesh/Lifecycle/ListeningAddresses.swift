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
/// replaced whole (a reader never sees half of it) and removed when the mesh stops, unless it
/// handed over to a new process (``handOff()``): the file is then the new one's. The pools'
/// callback listeners are in the admin listener's `/pools`.
package final class ListeningAddresses: Sendable {
  /// The file's name in the state folder.
  package static let fileName = "listening.json"

  /// The file's path.
  package let path: String
  /// The listeners serving, and whether the file has passed to a process that took over.
  private let known: Mutex<(listeners: [String: String], handedOff: Bool)>
  private let pid = ProcessInfo.processInfo.processIdentifier

  /// The file of the mesh whose state folder is `stateDir`.
  package init(stateDir: String) {
    path = URL(fileURLWithPath: stateDir).appendingPathComponent(Self.fileName).path
    known = Mutex(([:], false))
  }

  /// Adds the listener `name` (`registry`, `admin`) serving at `address` and writes the file.
  /// A file that cannot be written is logged: the mesh serves on without it.
  package func serving(_ name: String, at address: HostPort, logger: Logger) {
    // Written under the lock: two listeners ready at once must not write their views out of order.
    let failure = known.withLock { known -> (any Error)? in
      guard !known.handedOff else { return nil }
      known.listeners[name] = address.description
      var fields: [String: any Sendable] = known.listeners
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

  /// The process taking over is ready: from now on the file is its to write and remove, and this
  /// one leaves it alone. Run before this process lets its listeners go, so that the new one
  /// (which writes the file once it serves on their ports) never has its file removed.
  package func handOff() {
    known.withLock { $0.handedOff = true }
  }

  /// Removes the file at a clean stop, unless this process handed it off (``handOff()``); the
  /// removal is under the lock, so a hand-off cannot come between the check and the removal.
  package func remove() {
    known.withLock { known in
      guard !known.handedOff else { return }
      try? FileManager.default.removeItem(atPath: path)
    }
  }
}
