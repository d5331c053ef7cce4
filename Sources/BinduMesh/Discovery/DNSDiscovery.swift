import Logging
import ServiceLifecycle

/// Keeps the endpoints of pools with a `dns` name equal to the name's address records:
/// resolved at start and every `dns_refresh`; new records join (after a passing probe), missing
/// ones drain (no new calls, calls in flight finish). A failed resolution changes nothing.
struct DNSDiscovery: Service {
  let pools: [(pool: ReplicaPool, name: HostPort, refresh: Duration)]
  let resolver: any DNSResolver
  let logger: Logger

  func run() async throws {
    await withDiscardingTaskGroup { group in
      for target in pools {
        group.addTask { await self.follow(target.pool, name: target.name, refresh: target.refresh) }
      }
    }
  }

  private func follow(_ pool: ReplicaPool, name: HostPort, refresh: Duration) async {
    let logger = self.logger.with("mesh.pool", pool.name).with("mesh.dns", "\(name)")
    while !Task.isShuttingDownGracefully && !Task.isCancelled {
      do {
        let addresses = try await resolver.resolve(host: name.host, port: name.port)
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
      do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: refresh) } } catch { return }
    }
  }
}
