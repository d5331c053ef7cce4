import Logging
import ServiceLifecycle

/// Evicts registered replicas with neither a heartbeat nor a passing health probe for
/// `registry.replica_timeout`, and keeps the state file current. With a shared registry, the
/// other meshes' sightings count, and nobody is evicted while the database is out of reach.
struct ReplicaEvictor: Service {
  let directory: PoolDirectory
  let timeout: Duration
  let shared: SharedRegistry?
  let logger: Logger

  func run() async throws {
    let period = min(timeout / 4, .seconds(5))
    while !Task.isShuttingDownGracefully {
      do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: period) } } catch { return }
      var evicted = false
      if let shared, !shared.allowsEviction { continue }
      for entry in await directory.all {
        let found = entry.pool.evict(silentFor: timeout)
        for endpoint in found.keptByProbes {
          logger.notice(
            "replica kept by its health probes: no heartbeat",
            metadata: ["mesh.pool": "\(entry.pool.name)", "mesh.replica": "\(endpoint)", "mesh.timeout": "\(timeout)"])
        }
        for endpoint in found.evicted {
          logger.warning(
            "replica evicted: no heartbeat and no passing probe",
            metadata: ["mesh.pool": "\(entry.pool.name)", "mesh.replica": "\(endpoint)", "mesh.timeout": "\(timeout)"])
        }
        evicted = evicted || !found.evicted.isEmpty
        shared?.evicted(found.evicted.compactMap(\.membershipID))
      }
      if evicted { await directory.persist() }
    }
  }
}

