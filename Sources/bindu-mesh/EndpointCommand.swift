import ArgumentParser
import BinduMesh
import BinduMeshConfig
import Foundation

/// `bindu-mesh endpoint drain|undrain POOL ADDRESS`: takes an endpoint out of rotation by hand
/// (no new calls, calls in flight finish, health checks go on) or puts it back, through the
/// running mesh's admin listener, with the bearer token of its `admin.token_file`.
struct EndpointCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "endpoint", abstract: "Drain or undrain an endpoint of a running mesh.",
    subcommands: [Drain.self, Undrain.self])

  /// What both subcommands take.
  struct Target: ParsableArguments {
    @Argument(help: "The pool (the agent's name).") var pool: String
    @Argument(help: "The endpoint, host:port as /pools shows it.") var address: String
    @Option(help: "The mesh's admin listener, host:port.") var admin = "127.0.0.1:9775"
    @Option(help: "A file holding the bearer token (the mesh's admin.token_file).") var tokenFile: String

    func validate() throws {
      guard HostPort(parsing: admin) != nil else { throw ValidationError("--admin: expected host:port, got \"\(admin)\"") }
      guard HostPort(parsing: address) != nil else { throw ValidationError("ADDRESS: expected host:port, got \"\(address)\"") }
    }

    func send(_ action: String) async throws {
      guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
        throw AdminClientError("cannot read the token file \(tokenFile)")
      }
      let path = "/pools/\(Self.escaped(pool))/endpoints/\(Self.escaped(address))/\(action)"
      let (code, body) = try await AdminClient.send(
        "POST", path, admin: admin, token: text.trimmingCharacters(in: .whitespacesAndNewlines))
      let answer = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
      guard code == 200 else { throw AdminClientError("the mesh answered \(code): \(answer)") }
      print(answer)
    }

    private static func escaped(_ text: String) -> String {
      text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? text
    }
  }

  struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "No new calls to the endpoint; calls in flight finish; health checks go on.")
    @OptionGroup var target: Target
    func run() async throws { try await target.send("drain") }
  }

  struct Undrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put a drained endpoint back in rotation.")
    @OptionGroup var target: Target
    func run() async throws { try await target.send("undrain") }
  }
}
