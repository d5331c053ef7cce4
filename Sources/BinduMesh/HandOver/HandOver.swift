import BinduDataPath
import BinduMeshConfig
import CSocketPassing
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// A new bindu-mesh process taking over from the one running with the same state directory, on
/// the same host, without a gap in the callback listeners.
///
/// The running mesh answers on a Unix socket in its state directory (``socketPath(stateDir:)``),
/// in two steps:
/// 1. A process started with `--take-over` asks. The running one stops writing its state file
///    (and refuses registrations for the moment) and sends its callback listeners' sockets
///    (SCM_RIGHTS), by pool, with the endpoints it has in rotation.
/// 2. The new process builds everything on those sockets and the state file, then says it is
///    ready, with the pools it serves (``TakenOver/confirm(agents:)``). Only then does the old
///    one close its registry and admin listeners, unregister the pools the new one does not
///    serve, and stop: GOAWAY, calls in flight finish, exit 0. Without that answer (the new
///    process failed), the old one goes on as before.
package enum HandOver {
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

  /// The new process's answer once it is ready.
  struct Ready: Codable, Sendable {
    /// The pools it serves: the old process unregisters the others from the cores.
    var agents: [String]
  }

  static let request = "bindu-mesh take-over 1\n"
  /// The most sockets one hand-over passes (Linux takes at most 253 per message).
  static let maxSockets = 253
  /// The largest offer or answer accepted.
  static let maxMessage = 16 << 20

  /// The Unix socket a running mesh answers on.
  package static func socketPath(stateDir: String) -> String {
    URL(fileURLWithPath: stateDir).appendingPathComponent("handover.sock").path
  }

  /// The sockets taken over, and the connection to the previous process until
  /// ``confirm(agents:)``.
  package final class TakenOver: Sendable {
    /// The previous process.
    package let pid: Int32
    /// Listening sockets by pool (agent), with the address the previous process bound.
    let sockets: [String: (address: HostPort, socket: CInt)]
    /// The endpoints in rotation in the previous process.
    let inRotation: [Offer.Endpoint]
    private let connection: Atomic<CInt>

    init(pid: Int32, sockets: [String: (address: HostPort, socket: CInt)], inRotation: [Offer.Endpoint], connection: CInt) {
      self.pid = pid
      self.sockets = sockets
      self.inRotation = inRotation
      self.connection = Atomic(connection)
    }

    /// How many listening sockets came.
    package var count: Int { sockets.count }

    /// Tells the previous process that this one is ready and serves `agents`: it then closes its
    /// registry and admin listeners and stops.
    func confirm(agents: [String]) throws {
      let fd = connection.exchange(-1, ordering: .relaxed)
      guard fd >= 0 else { return }
      defer { close(fd) }
      try HandOver.send(JSONEncoder().encode(Ready(agents: agents)), fds: [], on: fd)
    }

    /// Gives up: the previous process goes on serving (a start that failed).
    package func abandon() {
      let fd = connection.exchange(-1, ordering: .relaxed)
      if fd >= 0 { close(fd) }
    }

    deinit { abandon() }
  }

  /// Asks the mesh running with `stateDir` for its sockets; `nil` when none answers there.
  package static func takeOver(stateDir: String) throws -> TakenOver? {
    let path = socketPath(stateDir: stateDir)
    guard let fd = connect(path) else { return nil }
    do {
      setTimeout(fd, seconds: 30)
      try writeAll(Array(request.utf8), to: fd)
      let (data, received) = try receive(on: fd)
      do {
        let offer = try JSONDecoder().decode(Offer.self, from: data)
        guard offer.listeners.count == received.count else {
          throw SocketError(
            operation: "take over from \(path)",
            message: "\(offer.listeners.count) listeners announced, \(received.count) sockets received")
        }
        var sockets: [String: (address: HostPort, socket: CInt)] = [:]
        for (listener, socket) in zip(offer.listeners, received) {
          guard let address = HostPort(parsing: listener.address), sockets[listener.agent] == nil else {
            close(socket)
            continue
          }
          sockets[listener.agent] = (address, socket)
        }
        setTimeout(fd, seconds: 0)
        return TakenOver(pid: offer.pid, sockets: sockets, inRotation: offer.inRotation, connection: fd)
      } catch {
        received.forEach { close($0) }
        throw error
      }
    } catch {
      close(fd)
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

  // MARK: Messages: a 4-byte length with the sockets, then the JSON

  /// Sends `data` with `fds` on the Unix stream socket `fd`.
  static func send(_ data: Data, fds: [CInt], on fd: CInt) throws {
    guard fds.count <= maxSockets else {
      throw SocketError(operation: "hand over", message: "\(fds.count) listeners: at most \(maxSockets) can be passed")
    }
    var length = UInt32(data.count).bigEndian
    let header = withUnsafeBytes(of: &length) { Array($0) }
    let sent = header.withUnsafeBytes { bytes in
      fds.withUnsafeBufferPointer { fds in
        bindu_send_fds(fd, bytes.baseAddress, bytes.count, fds.baseAddress, CInt(fds.count))
      }
    }
    guard sent == 0 else { throw SocketError.last("sendmsg") }
    try writeAll(Array(data), to: fd)
  }

  /// Receives one message sent by ``send(_:fds:on:)``.
  static func receive(on fd: CInt) throws -> (Data, [CInt]) {
    var header = [UInt8](repeating: 0, count: 4)
    var fds = [CInt](repeating: -1, count: maxSockets)
    var count: CInt = 0
    var read = 0
    var received: [CInt] = []
    while read < 4 {
      let got = header.withUnsafeMutableBytes { buffer in
        bindu_receive_fds(fd, buffer.baseAddress! + read, 4 - read, &fds, CInt(fds.count), &count)
      }
      received += fds.prefix(Int(count))
      guard got > 0 else {
        received.forEach { close($0) }
        throw got == 0
          ? SocketError(operation: "hand-over", message: "the other process closed the connection")
          : SocketError.last("recvmsg")
      }
      read += got
    }
    let length = Int(UInt32(bigEndian: header.withUnsafeBytes { $0.load(as: UInt32.self) }))
    guard length <= maxMessage else {
      received.forEach { close($0) }
      throw SocketError(operation: "hand-over", message: "a message of \(length) bytes")
    }
    var body = [UInt8](repeating: 0, count: length)
    var filled = 0
    while filled < length {
      let got = body.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, length - filled) }
      if got < 0 && errno == EINTR { continue }
      guard got > 0 else {
        received.forEach { close($0) }
        throw SocketError(operation: "hand-over", message: "the message was cut short")
      }
      filled += got
    }
    return (Data(body), received)
  }

  static func writeAll(_ bytes: [UInt8], to fd: CInt) throws {
    var written = 0
    while written < bytes.count {
      let done = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + written, bytes.count - written, CInt(MSG_NOSIGNAL)) }
      if done < 0 && errno == EINTR { continue }
      guard done > 0 else { throw SocketError.last("send") }
      written += done
    }
  }

  /// A receive timeout on `fd` (0: none).
  static func setTimeout(_ fd: CInt, seconds: Int) {
    var timeout = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
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
