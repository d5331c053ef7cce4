import BinduDataPath
import BinduMeshConfig
import Logging
import ServiceLifecycle
import Synchronization

/// Keeps the endpoints of pools with a `dns` name equal to the name's address records:
/// resolved at start and every `dns_refresh`; new records join (after a passing probe), missing
/// ones drain (no new calls, calls in flight finish). A failed resolution changes nothing.
///
/// A reload starts (``follow(_:name:refresh:)``) and stops (``stop(_:)``) following a pool's
/// name while the mesh runs.
final class DNSDiscovery: Service, Sendable {
  private let resolver: any DNSResolver
  private let logger: Logger
  /// The follower of each pool's name; a result is applied only by the follower in place.
  private let followers = Mutex<(tasks: [String: (id: UInt64, task: Task<Void, Never>)], next: UInt64)>(([:], 0))

  init(resolver: any DNSResolver, logger: Logger) {
    self.resolver = resolver
    self.logger = logger
  }

  /// Follows `name` for `pool` (in place of the name it followed, if any).
  func follow(_ pool: ReplicaPool, name: HostPort, refresh: Duration) {
    followers.withLock { followers in
      followers.next += 1
      let id = followers.next
      followers.tasks[pool.name]?.task.cancel()
      followers.tasks[pool.name] = (id, Task { await self.resolve(pool, name: name, refresh: refresh, id: id) })
    }
  }

  /// Stops following a name for `pool`; no result of the follower is applied after this.
  func stop(_ pool: String) {
    followers.withLock { $0.tasks.removeValue(forKey: pool) }?.task.cancel()
  }

  func run() async throws {
    try? await gracefulShutdown()
    let all = followers.withLock { followers in
      defer { followers.tasks = [:] }
      return followers.tasks.values.map(\.task)
    }
    all.forEach { $0.cancel() }
  }

  private func resolve(_ pool: ReplicaPool, name: HostPort, refresh: Duration, id: UInt64) async {
    let logger = self.logger.with("mesh.pool", pool.name).with("mesh.dns", "\(name)")
    while !Task.isCancelled {
      do {
        let addresses = try await resolver.resolve(host: name.host, port: name.port)
        // Applied under the followers' lock, so that a stopped or replaced follower's last
        // result never lands after the reload that stopped it.
        let applied = followers.withLock { followers in
          followers.tasks[pool.name]?.id == id ? pool.setDiscovered(addresses) : nil
        }
        guard let (added, removed) = applied else { return }
        if !added.isEmpty || !removed.isEmpty {
          logger.notice(
            "replicas from DNS changed",
            metadata: [
              "mesh.added": "\(added.map(\.address.description))", "mesh.draining": "\(removed.map(\.address.description))",
            ])
        }
      } catch {
        logger.warning("DNS resolution failed; keeping the replicas known", metadata: ["error": "\(error)"])
      }
      do { try await Task.sleep(for: refresh) } catch { return }
    }
  }
}
