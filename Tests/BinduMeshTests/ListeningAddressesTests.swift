import Foundation
import Logging
import Testing

@testable import BinduMesh
@testable import BinduMeshConfig

/// `state.dir/listening.json`: each listener added as it serves, never a stale view, and removed
/// only by the process it names.
@Suite struct ListeningAddressesTests {
  let folder = FileManager.default.temporaryDirectory.appendingPathComponent("listening-\(UUID().uuidString)")
  let logger = Logger(label: "test")

  func read(_ addresses: ListeningAddresses) throws -> [String: Any] {
    let data = try #require(FileManager.default.contents(atPath: addresses.path))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  }

  @Test func listenersReadyAtOnceAreAllInTheFile() async throws {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    for round in 0..<50 {
      let addresses = ListeningAddresses(stateDir: folder.path)
      addresses.removeStale()
      await withTaskGroup(of: Void.self) { group in
        for (index, name) in ["registry", "admin", "third", "fourth"].enumerated() {
          group.addTask { addresses.serving(name, at: HostPort(host: "127.0.0.1", port: 40_000 + index), logger: logger) }
        }
      }
      let fields = try read(addresses)
      #expect(fields["registry"] as? String == "127.0.0.1:40000", "round \(round)")
      #expect(fields["admin"] as? String == "127.0.0.1:40001", "round \(round)")
      #expect(fields.count == 5, "round \(round): \(fields)")
      #expect(fields["pid"] as? Int == Int(ProcessInfo.processInfo.processIdentifier))
    }
  }

  @Test func removedAtAStopUnlessHandedOff() throws {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let addresses = ListeningAddresses(stateDir: folder.path)
    addresses.serving("registry", at: HostPort(host: "127.0.0.1", port: 3775), logger: logger)
    addresses.remove()
    #expect(!FileManager.default.fileExists(atPath: addresses.path))

    // Handed off: the process that took over writes its own, and this one leaves it alone.
    addresses.serving("registry", at: HostPort(host: "127.0.0.1", port: 3775), logger: logger)
    addresses.handOff()
    let theirs = #"{"pid": 1, "registry": "127.0.0.1:3775"}"#
    try Data(theirs.utf8).write(to: URL(fileURLWithPath: addresses.path))
    addresses.serving("admin", at: HostPort(host: "127.0.0.1", port: 9775), logger: logger)
    addresses.remove()
    #expect(try read(addresses)["pid"] as? Int == 1)
    #expect(try read(addresses)["admin"] == nil)
  }

  @Test func aFileThatCannotBeWrittenIsNoFailure() {
    let addresses = ListeningAddresses(stateDir: "/proc/no-such-folder")
    addresses.serving("registry", at: HostPort(host: "127.0.0.1", port: 3775), logger: logger)
    #expect(!FileManager.default.fileExists(atPath: addresses.path))
  }
}
