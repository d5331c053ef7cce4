import ArgumentParser
import BinduMesh
import BinduMeshConfig
import Foundation

/// `bindu-mesh status`: a running mesh's pools, endpoints, certificates and recent events, read
/// from its admin listener's `/status`.
struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a running mesh's pools, endpoints, certificates and recent events.",
    discussion: """
      Reads /status from the mesh's admin listener (admin.listen). Per endpoint: state, whether \
      it is in rotation, calls in flight, and over the last minute its success rate, calls per \
      second and p50/p99 call time.
      """)

  @Option(help: "The mesh's admin listener, host:port.") var admin = "127.0.0.1:9775"
  @Flag(help: "Print again every --interval seconds until interrupted.") var watch = false
  @Option(help: "Seconds between two prints with --watch.") var interval: Double = 2
  @Flag(help: "Print the /status JSON as the mesh sends it.") var json = false

  func validate() throws {
    guard HostPort(parsing: admin) != nil else { throw ValidationError("--admin: expected host:port, got \"\(admin)\"") }
    guard interval > 0 else { throw ValidationError("--interval: expected a number of seconds above 0") }
  }

  func run() async throws {
    repeat {
      let text = try await fetch()
      if watch { print("\u{1B}[H\u{1B}[2J", terminator: "") }
      print(text, terminator: "")
      if watch { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
    } while watch
  }

  private func fetch() async throws -> String {
    let (code, data) = try await AdminClient.send("GET", "/status", admin: admin)
    guard code == 200 else {
      throw AdminClientError("http://\(admin)/status answered \(code), not 200: is it a bindu-mesh admin listener?")
    }
    if json { return String(decoding: data, as: UTF8.self) + "\n" }
    do {
      return StatusTable.render(try StatusReport.decoder().decode(StatusReport.self, from: data), admin: admin)
    } catch {
      throw AdminClientError("http://\(admin)/status did not answer a bindu-mesh status report: \(error)")
    }
  }
}
