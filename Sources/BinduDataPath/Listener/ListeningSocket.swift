import BinduMeshConfig

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#else
  import Darwin
#endif

/// TCP listening sockets the mesh opens itself (rather than through a bootstrap), so that it
/// can hand them to a new process (``HandOver``) with their queue of connections.
package enum ListeningSocket {
  /// A TCP socket bound to `address` (an IP literal or a name) and listening, close-on-exec.
  package static func open(_ address: HostPort, backlog: CInt = 256) throws -> CInt {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
    var found: UnsafeMutablePointer<addrinfo>?
    let host = address.host.hasPrefix("[") ? String(address.host.dropFirst().dropLast()) : address.host
    let status = getaddrinfo(host.isEmpty ? nil : host, String(address.port), &hints, &found)
    guard status == 0, let first = found else {
      throw SocketError(operation: "resolve \(address.host)", message: String(cString: gai_strerror(status)))
    }
    defer { freeaddrinfo(found) }
    let fd = socket(first.pointee.ai_family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketError.last("socket") }
    var on: CInt = 1
    _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<CInt>.size))
    guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
      let error = SocketError.last("bind \(address)")
      close(fd)
      throw error
    }
    guard listen(fd, backlog) == 0 else {
      let error = SocketError.last("listen \(address)")
      close(fd)
      throw error
    }
    return fd
  }

  /// Whether `address` can be bound now (its previous owner has let it go).
  package static func isFree(_ address: HostPort) -> Bool {
    guard let fd = try? open(address, backlog: 1) else { return false }
    close(fd)
    return true
  }
}

/// A failed socket call, with what it was doing.
package struct SocketError: Error, CustomStringConvertible {
  /// What failed, with its address (`bind 127.0.0.1:3776`).
  package var operation: String
  /// Why.
  package var message: String
  /// The `errno` of a failed system call (0 for other failures).
  package var code: CInt = 0

  package init(operation: String, message: String, code: CInt = 0) {
    self.operation = operation
    self.message = message
    self.code = code
  }

  package static func last(_ operation: String) -> SocketError {
    let code = errno
    return SocketError(operation: operation, message: String(cString: strerror(code)), code: code)
  }

  /// Whether another socket holds the address (`EADDRINUSE`).
  package var isAddressInUse: Bool { code == EADDRINUSE }

  package var description: String { "\(operation): \(message)" }
}
