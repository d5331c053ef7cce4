import Foundation
import Logging
import Synchronization
import CSocketPassing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// A new bindu-mesh process taking over from the one running with the same state directory, on
/// the same host, without a gap in the callback listeners.
///
/// The running mesh answers on a Unix socket in its state directory (``socketPath(stateDir:)``).
/// A process started with `--take-over` connects and asks; the running one then closes its
/// registry and admin listeners, stops writing the state file, sends its callback listeners'
/// sockets (SCM_RIGHTS) and stops: no new connection, GOAWAY, calls in flight finish, and it
/// exits without unregistering from the cores. The new process serves those same sockets, so a
/// connection waiting in their queue is not lost; it reads the state file the old one left,
/// binds the registry and admin listeners once they are free, and registers with the cores.
public enum HandOver {
  /// What the running mesh sends with its sockets.
  struct Offer: Codable, Sendable {
    struct Listener: Codable, Sendable {
      var agent: String
      var address: String
    }
    /// An endpoint in rotation in the running process.
    struct Endpoint: Codable, Sendable, Hashable {
      var agent: String
      var address: String
    }
    var format = 1
    var pid: Int32
    var listeners: [Listener]
    /// The endpoints in rotation: the new process takes calls on them at once, instead of
    /// waiting for their first probe as after a restart.
    var inRotation: [Endpoint] = []
  }

  static let request = "bindu-mesh take-over 1\n"

  /// The Unix socket a running mesh answers on.
  public static func socketPath(stateDir: String) -> String {
    URL(fileURLWithPath: stateDir).appendingPathComponent("handover.sock").path
  }

  /// The sockets taken over, by the address they listen on, and the process they came from.
  public struct TakenOver: Sendable {
    /// The previous process.
    public var pid: Int32
    /// Listening sockets by the address the previous process bound (its `listen_address`).
    public var sockets: [HostPort: CInt]
    /// The endpoints in rotation in the previous process.
    var inRotation: [Offer.Endpoint] = []
  }

  /// Asks the mesh running with `stateDir` to hand over; `nil` when none answers there.
  public static func takeOver(stateDir: String) throws -> TakenOver? {
    let path = socketPath(stateDir: stateDir)
    guard let fd = connect(path) else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    guard request.utf8CString.withUnsafeBufferPointer({ write(fd, $0.baseAddress, $0.count - 1) }) > 0 else {
      throw SocketError.last("write \(path)")
    }
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    var fds = [CInt](repeating: -1, count: 64)
    var count: CInt = 0
    let read = bindu_receive_fds(fd, &buffer, buffer.count, &fds, CInt(fds.count), &count)
    guard read > 0 else {
      throw read == 0
        ? SocketError(operation: "take over from \(path)", message: "the running mesh closed the connection")
        : SocketError.last("take over from \(path)")
    }
    let received = Array(fds.prefix(Int(count)))
    do {
      let offer = try JSONDecoder().decode(Offer.self, from: Data(buffer.prefix(read)))
      guard offer.listeners.count == received.count else {
        throw SocketError(
          operation: "take over from \(path)",
          message: "\(offer.listeners.count) listeners announced, \(received.count) sockets received")
      }
      var sockets: [HostPort: CInt] = [:]
      for (listener, socket) in zip(offer.listeners, received) {
        guard let address = HostPort(parsing: listener.address) else { continue }
        sockets[address] = socket
      }
      return TakenOver(pid: offer.pid, sockets: sockets, inRotation: offer.inRotation)
    } catch {
      received.forEach { close($0) }
      throw error
    }
  }

  /// Throws when a mesh already runs with `stateDir` (it answers on its hand-over socket);
  /// removes a socket file left by a mesh that is gone.
  static func checkNoneRunning(stateDir: String) throws {
    let path = socketPath(stateDir: stateDir)
    if let fd = connect(path) {
      close(fd)
      throw MeshError.alreadyRunning(stateDir: stateDir)
    }
    unlink(path)
  }

  /// A connected Unix socket to `path`, or `nil` when nothing listens there.
  static func connect(_ path: String) -> CInt? {
    let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = unixAddress(path)
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard connected == 0 else {
      close(fd)
      return nil
    }
    return fd
  }

  static func unixAddress(_ path: String) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      let bytes = Array(path.utf8.prefix(raw.count - 1))
      raw.copyBytes(from: bytes)
      raw[bytes.count] = 0
    }
    return address
  }
}
