import Logging
import ServiceLifecycle

/// Evicts registered replicas that stopped heart-beating for `registry.replica_timeout`.
struct ReplicaEvictor: Service {
  let directory: PoolDirectory
  let timeout: Duration
  let logger: Logger

  func run() async throws {
    let period = min(timeout / 4, .seconds(5))
    while !Task.isShuttingDownGracefully {
      do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: period) } } catch { return }
      for entry in await directory.all {
        for endpoint in entry.pool.evict(silentFor: timeout) {
          logger.warning(
            "replica evicted: no heartbeat",
            metadata: ["mesh.pool": "\(entry.pool.name)", "mesh.replica": "\(endpoint)", "mesh.timeout": "\(timeout)"])
        }
      }
    }
  }
}

