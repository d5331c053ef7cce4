import BinduMeshConfig
import GRPCCore
import GRPCNIOTransportCore

/// Resolves a name to every address it has.
package protocol DNSResolver: Sendable {
  /// Every A and AAAA record of `host`, each with `port`.
  func resolve(host: String, port: Int) async throws -> [HostPort]
}

/// The system resolver (`getaddrinfo`), as grpc-swift-nio-transport runs it for its own DNS
/// targets: off the event loops, honouring `/etc/hosts` and the cluster DNS of a Kubernetes pod
/// alike.
package struct SystemDNSResolver: DNSResolver {
  /// Creates the resolver.
  package init() {}

  package func resolve(host: String, port: Int) async throws -> [HostPort] {
    let resolver = NameResolvers.DNS().resolver(for: .dns(host: host, port: port))
    var names = resolver.names.makeAsyncIterator()
    let result: NameResolutionResult?
    do {
      result = try await names.next()
    } catch let error as RPCError {
      throw DNSError(host: host, reason: error.cause.map { "\($0)" } ?? error.message)
    }
    var addresses: [HostPort] = []
    for address in result?.endpoints.flatMap(\.addresses) ?? [] {
      let found: HostPort
      if let ipv4 = address.ipv4 {
        found = HostPort(host: ipv4.host, port: ipv4.port)
      } else if let ipv6 = address.ipv6 {
        found = HostPort(host: ipv6.host, port: ipv6.port)
      } else {
        continue
      }
      if !addresses.contains(found) { addresses.append(found) }
    }
    guard !addresses.isEmpty else { throw DNSError(host: host, reason: "no address") }
    return addresses
  }
}

/// A name that could not be resolved.
package struct DNSError: Error, CustomStringConvertible {
  /// The name.
  package var host: String
  /// What the resolver said.
  package var reason: String
  package var description: String { "cannot resolve \(host): \(reason)" }
}
