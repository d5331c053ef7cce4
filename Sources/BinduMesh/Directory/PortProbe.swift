import BinduContract
import BinduMeshConfig
import GRPCCore
import GRPCNIOTransportHTTP2

/// What answers on a TCP address another process holds: a `BinduService` (a Bindu core or a
/// bindu-mesh registry), another gRPC server, or something that does not speak gRPC in
/// plaintext. Found with one `Heartbeat` for an agent id no one has, which changes nothing.
package enum PortSpeaker: Sendable, Hashable {
  /// It answered `BinduService.Heartbeat`.
  case binduService
  /// A gRPC server without `BinduService` (it answered `UNIMPLEMENTED`).
  case otherGRPC
  /// No gRPC answer in plaintext, with the client's reason.
  case notGRPC(String)

  /// Asks `address` (a wildcard host is asked on loopback), for at most `timeout`.
  package static func probe(_ address: HostPort, timeout: Duration = .seconds(2)) async -> PortSpeaker {
    // A listener that takes the connection and never answers holds the client past the call's
    // deadline: the answer is what came within it.
    await withTaskGroup(of: PortSpeaker.self) { group in
      group.addTask { await ask(address, timeout: timeout) }
      group.addTask {
        try? await Task.sleep(for: timeout + .milliseconds(500))
        return .notGRPC("no answer within \(timeout)")
      }
      let first = await group.next() ?? .notGRPC("no answer")
      group.cancelAll()
      return first
    }
  }

  private static func ask(_ address: HostPort, timeout: Duration) async -> PortSpeaker {
    let asked =
      switch address.host {
      case "", "0.0.0.0": HostPort(host: "127.0.0.1", port: address.port)
      case "::", "[::]": HostPort(host: "::1", port: address.port)
      default: address
      }
    let target = asked.resolvableTarget
    var options = CallOptions.defaults
    options.timeout = timeout
    do {
      let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
      return try await withGRPCClient(transport: transport) { client in
        do {
          _ = try await Bindu_Grpc_BinduService.Client(wrapping: client).heartbeat(
            .with { $0.agentID = "bindu-mesh-port-probe" }, options: options)
          return .binduService
        } catch let error as RPCError where error.code == .unimplemented {
          return .otherGRPC
        } catch let error as RPCError {
          return .notGRPC("\(error.code): \(error.message)")
        }
      }
    } catch {
      return .notGRPC("\(error)")
    }
  }
}

extension HostPort {
  /// The target grpc-swift dials for this address: an IP literal as one, a name through DNS.
  var resolvableTarget: any ResolvableTarget {
    if isIPv4Address {
      ResolvableTargets.IPv4.ipv4(address: host, port: port)
    } else if isIPAddress {
      ResolvableTargets.IPv6.ipv6(address: host, port: port)
    } else {
      ResolvableTargets.DNS.dns(host: host, port: port)
    }
  }
}
