import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Probes every endpoint of every pool with `AgentHandler.HealthCheck`, each at its pool's
/// `health.interval`, and ends ejections whose time is up. New endpoints are probed at once.
struct HealthChecker: Service {
  let directory: PoolDirectory
  let logger: Logger
  /// How often the checker looks for endpoints due a probe.
  var tick: Duration = .milliseconds(100)

  func run() async throws {
    var nextProbe: [ObjectIdentifier: ContinuousClock.Instant] = [:]
    let probing = Probing()
    await withDiscardingTaskGroup { group in
      while !Task.isShuttingDownGracefully && !Task.isCancelled {
        let now = ContinuousClock.now
        var present: Set<ObjectIdentifier> = []
        for entry in await directory.all {
          let pool = entry.pool
          pool.expireEjections()
          for endpoint in pool.endpoints {
            let id = ObjectIdentifier(endpoint)
            present.insert(id)
            guard nextProbe[id].map({ $0 <= now }) ?? true, probing.start(id) else {
              continue
            }
            nextProbe[id] = now + pool.policy.health.interval
            group.addTask {
              let result = await HealthProbe.run(endpoint, pool: pool)
              pool.observeProbe(endpoint, passed: result.passed, message: result.message)
              probing.end(id)
            }
          }
        }
        nextProbe = nextProbe.filter { present.contains($0.key) }
        do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: tick) } } catch { break }
      }
    }
  }
}

/// The endpoints with a probe under way.
private final class Probing: Sendable {
  private let ids = Mutex<Set<ObjectIdentifier>>([])
  /// `false` when `id` already has a probe under way.
  func start(_ id: ObjectIdentifier) -> Bool { ids.withLock { $0.insert(id).inserted } }
  func end(_ id: ObjectIdentifier) { _ = ids.withLock { $0.remove(id) } }
}
