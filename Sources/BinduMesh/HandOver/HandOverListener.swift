import BinduDataPath
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// The running mesh's side of a ``HandOver``: a Unix socket in the state directory, served by a
/// thread of its own (a request comes once per upgrade).
final class HandOverListener: Sendable {
  /// What the running mesh does at each step of a hand-over.
  struct Steps: Sendable {
    /// Stops writing the state file; the offer and the sockets to send (copies, closed once sent).
    var offer: @Sendable () async -> (offer: HandOver.Offer, sockets: [CInt])
    /// The new process is ready and serves these pools: close the control listeners.
    var commit: @Sendable (_ agents: [String]) async -> Void
    /// The new process did not take over: go on as before.
    var abandon: @Sendable (_ reason: String) async -> Void
    /// Stop the mesh (after a commit).
    var stop: @Sendable () -> Void
  }

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
  static func start(path: String, logger: Logger, steps: Steps) throws -> HandOverListener {
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
    let thread = Thread { listener.serve(steps) }
    thread.name = "bindu-mesh hand-over"
    thread.start()
    return listener
  }

  /// Stops answering; the thread closes the socket.
  func close() {
    guard !closed.exchange(true, ordering: .relaxed) else { return }
    shutdown(fd, CInt(SHUT_RDWR))
  }

  private func serve(_ steps: Steps) {
    defer {
      closed.store(true, ordering: .relaxed)
      Glibc.close(fd)
    }
    while !closed.load(ordering: .relaxed) {
      let client = accept(fd, nil, nil)
      if client < 0 {
        switch errno {
        case EINTR, ECONNABORTED: continue
        case EMFILE, ENFILE, ENOBUFS, ENOMEM:
          logger.warning("hand-over socket: cannot accept now", metadata: ["error": "\(SocketError.last("accept"))"])
          usleep(100_000)
          continue
        default:
          if !closed.load(ordering: .relaxed) {
            logger.error("hand-over is off: the socket failed", metadata: ["error": "\(SocketError.last("accept"))"])
          }
          return
        }
      }
      let handedOver = handle(client, steps)
      Glibc.close(client)
      if handedOver {
        steps.stop()
        return
      }
    }
  }

  /// Answers one connection; `true` when the new process took over.
  private func handle(_ client: CInt, _ steps: Steps) -> Bool {
    HandOver.setTimeout(client, seconds: 5)
    var buffer = [UInt8](repeating: 0, count: 64)
    let count = read(client, &buffer, buffer.count)
    // A start that only checks whether a mesh runs here connects and closes: nothing to do.
    guard count > 0 else { return false }
    guard String(decoding: buffer.prefix(count), as: UTF8.self) == HandOver.request else {
      logger.warning("hand-over socket: unknown request ignored", metadata: ["mesh.path": "\(path)"])
      return false
    }
    logger.notice("a new bindu-mesh process asks to take over: sending the listening sockets")
    let (offer, sockets) = blocking { await steps.offer() }
    defer { sockets.forEach { Glibc.close($0) } }
    do {
      try HandOver.send(JSONEncoder().encode(offer), fds: sockets, on: client)
      // The new process builds everything before it answers: TLS files, the state file, pools.
      HandOver.setTimeout(client, seconds: 120)
      let (data, extra) = try HandOver.receive(on: client)
      extra.forEach { Glibc.close($0) }
      let ready = try JSONDecoder().decode(HandOver.Ready.self, from: data)
      blocking { await steps.commit(ready.agents) }
      logger.notice(
        "the new process took over; stopping: no new calls, calls in flight finish",
        metadata: ["mesh.listeners": "\(offer.listeners.map(\.address))", "mesh.agents": "\(ready.agents)"])
      return true
    } catch {
      blocking { await steps.abandon("\(error)") }
      return false
    }
  }

  /// Runs `body` from this thread and waits for it.
  private func blocking<Result: Sendable>(_ body: @escaping @Sendable () async -> Result) -> Result {
    let result = Mutex<Result?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
      let value = await body()
      result.withLock { $0 = value }
      done.signal()
    }
    done.wait()
    return result.withLock { $0! }
  }
}
