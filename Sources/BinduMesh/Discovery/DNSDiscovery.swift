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
  private let followers = Mutex<[String: Task<Void, Never>]>([:])

  init(resolver: any DNSResolver, logger: Logger) {
    self.resolver = resolver
    self.logger = logger
  }

  /// Follows `name` for `pool` (in place of the name it followed, if any).
  func follow(_ pool: ReplicaPool, name: HostPort, refresh: Duration) {
    let task = Task { await self.resolve(pool, name: name, refresh: refresh) }
    followers.withLock { followers in
      followers[pool.name]?.cancel()
      followers[pool.name] = task
    }
  }

  /// Stops following a name for `pool`.
  func stop(_ pool: String) {
    followers.withLock { $0.removeValue(forKey: pool) }?.cancel()
  }

  func run() async throws {
    try? await gracefulShutdown()
    let all = followers.withLock { followers in
      defer { followers = [:] }
      return Array(followers.values)
    }
    all.forEach { $0.cancel() }
  }

  private func resolve(_ pool: ReplicaPool, name: HostPort, refresh: Duration) async {
    let logger = self.logger.with("mesh.pool", pool.name).with("mesh.dns", "\(name)")
    while !Task.isCancelled {
      do {
        let addresses = try await resolver.resolve(host: name.host, port: name.port)
        guard !Task.isCancelled else { return }
        let (added, removed) = pool.setDiscovered(addresses)
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
