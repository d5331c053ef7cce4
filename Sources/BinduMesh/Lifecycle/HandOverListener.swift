import Foundation
import Logging
import Synchronization
import CSocketPassing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// The running mesh's side of a ``HandOver``: a Unix socket in the state directory, served by a
/// thread of its own (a request comes once per upgrade).
///
/// On a request it asks `prepare` for the offer (the mesh closes its registry and admin
/// listeners and stops writing its state), sends it with the sockets, then calls `stop`.
final class HandOverListener: Sendable {
  /// What to send: the listeners and their sockets, in the same order.
  typealias Prepare = @Sendable () async -> (offer: HandOver.Offer, sockets: [CInt])

  private let path: String
  private let fd: CInt
  private let logger: Logger
  private let closed = Atomic<Bool>(false)

  private init(path: String, fd: CInt, logger: Logger) {
    self.path = path
    self.fd = fd
    self.logger = logger
  }

  /// Listens at `path` (a file left there is replaced) and serves requests on a thread.
  static func start(
    path: String, logger: Logger, prepare: @escaping Prepare, stop: @escaping @Sendable () -> Void
  ) throws -> HandOverListener {
    guard path.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else {
      throw SocketError(operation: "listen on \(path)", message: "the path is too long for a Unix socket")
    }
    let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketError.last("socket") }
    unlink(path)
    var address = HandOver.unixAddress(path)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0, listen(fd, 4) == 0 else {
      let error = SocketError.last("listen on \(path)")
      Glibc.close(fd)
      throw error
    }
    chmod(path, 0o600)
    let listener = HandOverListener(path: path, fd: fd, logger: logger)
    let thread = Thread { listener.serve(prepare: prepare, stop: stop) }
    thread.name = "bindu-mesh hand-over"
    thread.start()
    return listener
  }

  /// Stops answering (the socket file is removed unless a new process replaced it).
  func close() {
    guard !closed.exchange(true, ordering: .relaxed) else { return }
    shutdown(fd, CInt(SHUT_RDWR))
  }

  private func serve(prepare: @escaping Prepare, stop: @escaping @Sendable () -> Void) {
    defer { Glibc.close(fd) }
    while !closed.load(ordering: .relaxed) {
      let client = accept(fd, nil, nil)
      if client < 0 {
        if errno == EINTR { continue }
        return
      }
      if handle(client, prepare: prepare) {
        Glibc.close(client)
        closed.store(true, ordering: .relaxed)
        stop()
        return
      }
      Glibc.close(client)
    }
  }

  /// Answers one connection; `true` when the sockets were handed over.
  private func handle(_ client: CInt, prepare: @escaping Prepare) -> Bool {
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var buffer = [UInt8](repeating: 0, count: 64)
    let count = read(client, &buffer, buffer.count)
    // A start that only checks whether a mesh runs here connects and closes: nothing to do.
    guard count > 0 else { return false }
    guard String(decoding: buffer.prefix(count), as: UTF8.self) == HandOver.request else {
      logger.warning("hand-over socket: unknown request ignored", metadata: ["mesh.path": "\(path)"])
      return false
    }
    logger.notice("a new bindu-mesh process asks to take over: closing the registry and admin listeners")
    let result = Mutex<(offer: HandOver.Offer, sockets: [CInt])?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
      let prepared = await prepare()
      result.withLock { $0 = prepared }
      done.signal()
    }
    done.wait()
    guard let (offer, sockets) = result.withLock({ $0 }), let data = try? JSONEncoder().encode(offer) else { return false }
    let sent = data.withUnsafeBytes { bytes in
      sockets.withUnsafeBufferPointer { fds in
        bindu_send_fds(client, bytes.baseAddress, bytes.count, fds.baseAddress, CInt(fds.count))
      }
    }
    guard sent == 0 else {
      logger.error(
        "cannot send the listening sockets to the new process; stopping anyway (it serves from the state file)",
        metadata: ["error": "\(SocketError.last("sendmsg"))"])
      return true
    }
    logger.notice(
      "listening sockets handed over; stopping: no new calls, calls in flight finish",
      metadata: ["mesh.listeners": "\(offer.listeners.map(\.address))"])
    return true
  }
}
