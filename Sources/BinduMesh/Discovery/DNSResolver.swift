import NIOCore
import NIOPosix

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Resolves a name to every address it has.
public protocol DNSResolver: Sendable {
  /// Every A and AAAA record of `host`, each with `port`.
  func resolve(host: String, port: Int) async throws -> [HostPort]
}

/// The system resolver (`getaddrinfo`), run off the event loops: honours `/etc/hosts` and
/// the cluster DNS of a Kubernetes pod alike.
public struct SystemDNSResolver: DNSResolver {
  /// Creates the resolver.
  public init() {}

  public func resolve(host: String, port: Int) async throws -> [HostPort] {
    try await NIOThreadPool.singleton.runIfActive {
      var hints = addrinfo()
      hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
      hints.ai_family = AF_UNSPEC
      var list: UnsafeMutablePointer<addrinfo>?
      let status = getaddrinfo(host, String(port), &hints, &list)
      guard status == 0, let first = list else {
        throw DNSError(host: host, reason: String(cString: gai_strerror(status)))
      }
      defer { freeaddrinfo(first) }
      var addresses: [HostPort] = []
      var next: UnsafeMutablePointer<addrinfo>? = first
      while let info = next {
        if let address = info.pointee.ai_addr,
          let socketAddress = try? SocketAddress(address, size: Int(info.pointee.ai_addrlen)),
          let ip = socketAddress.ipAddress
        {
          let hostPort = HostPort(host: ip, port: port)
          if !addresses.contains(hostPort) { addresses.append(hostPort) }
        }
        next = info.pointee.ai_next
      }
      return addresses
    }
  }
}

/// A name that could not be resolved.
public struct DNSError: Error, CustomStringConvertible {
  /// The name.
  public var host: String
  /// What the resolver said.
  public var reason: String
  public var description: String { "cannot resolve \(host): \(reason)" }
}

extension SocketAddress {
  fileprivate init(_ pointer: UnsafeMutablePointer<sockaddr>, size: Int) throws {
    switch Int32(pointer.pointee.sa_family) {
    case AF_INET:
      self = pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
    case AF_INET6:
      self = pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
    default:
      throw DNSError(host: "", reason: "unknown address family")
    }
  }
}
