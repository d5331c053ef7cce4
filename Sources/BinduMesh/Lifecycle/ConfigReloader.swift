import BinduDataPath
import BinduMeshConfig
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Reloads the config file while the mesh runs: on SIGHUP (then the TLS files too) and on the
/// admin listener's `POST /reload`.
///
/// A file that does not parse or check is refused and the config in force stays; the error
/// names the file, line and key. Otherwise the change (``ConfigChange``) is applied: declared
/// pools added (bound, registered with the cores), removed (unregistered, listener closed once
/// its calls finish) or changed; the policy and the call and connection settings are in force
/// for new calls. Keys that only a new process can take are named in the log and kept as they
/// are. Calls in flight are never cut. Reloads run one at a time, in the order asked.
package final class ConfigReloader: Service, Sendable {
  /// What a reload did.
  package enum Outcome: Sendable, Equatable {
    /// The change was applied (it may be empty, or leave keys for the next start).
    case applied(ConfigChange)
    /// The file was refused; the config in force stays.
    case refused(String)
    /// The mesh was started without a config file: there is nothing to reload.
    case noFile
  }

  private let source: (@Sendable () throws -> MeshConfig)?
  private let directory: PoolDirectory
  private let registrars: CoreRegistrars
  private let tls: TLSReloader
  private let metrics: MeshMetrics
  private let logger: Logger
  private let last = Mutex<Task<Outcome, Never>?>(nil)

  init(
    source: (@Sendable () throws -> MeshConfig)?, directory: PoolDirectory, registrars: CoreRegistrars,
    tls: TLSReloader, metrics: MeshMetrics, logger: Logger
  ) {
    self.source = source
    self.directory = directory
    self.registrars = registrars
    self.tls = tls
    self.metrics = metrics
    self.logger = logger
    for result in ["applied", "refused"] { _ = metrics.counter("config_reloads_total", [("result", result)]) }
  }

  /// SIGHUP: reload the config file, then every TLS file. SIGHUP is trapped whatever the
  /// config, so that `systemctl reload` never ends the mesh.
  package func run() async throws {
    let signals = await UnixSignalsSequence(trapping: .sighup)
    for await _ in signals.cancelOnGracefulShutdown() {
      logger.notice("SIGHUP: reloading the config and the TLS files")
      _ = await reload()
      tls.reloadAll()
    }
  }

  /// Reads the config file again and applies what changed, after any reload under way.
  package func reload() async -> Outcome {
    let task = last.withLock { last -> Task<Outcome, Never> in
      let previous = last
      let task = Task {
        _ = await previous?.value
        return await self.perform()
      }
      last = task
      return task
    }
    return await task.value
  }

  private func perform() async -> Outcome {
    guard let source else {
      logger.notice("no config file: nothing to reload (started without --config)")
      return .noFile
    }
    let new: MeshConfig
    do {
      new = try source()
      for pool in new.pools {
        guard let json = pool.agentConfigJSON else { continue }
        let definition = try AgentDefinition(configJSON: json, skills: pool.skills.map(\.definition))
        if case .refused(let reason) = registrars.check(definition) {
          throw MeshError.poolRefused(pool: pool.agent, reason: reason)
        }
      }
    } catch {
      return refuse("\(error)")
    }
    let old = await directory.config
    var change = ConfigChange(from: old, to: new)
    let reloaded: PoolDirectory.Reloaded
    do {
      reloaded = try await directory.reload(to: ConfigChange.inForce(old: old, new: new), change: change)
    } catch {
      return refuse("\(error)")
    }
    for agent in reloaded.keptListenAddresses {
      change.needsRestart.append("pools[\(agent)].listen")
      change.changedPools[agent]?.listener = false
      if change.changedPools[agent]?.isEmpty == true { change.changedPools[agent] = nil }
    }
    tls.watch(await directory.tlsMaterials)
    for entry in reloaded.added {
      if let definition = entry.pool.definition { _ = registrars.register(entry, definition: definition) }
    }
    for entry in reloaded.removed {
      await registrars.retire(agent: entry.pool.name)
      await directory.closeRemoved(entry)
    }
    metrics.counter("config_reloads_total", [("result", "applied")]).increment()
    logger.notice("config reloaded", metadata: ["mesh.changes": "\(change.summary)"])
    if !change.needsRestart.isEmpty {
      logger.warning(
        "config keys changed that take effect at the next start (or hand-over); their values in force stay",
        metadata: ["mesh.keys": "\(change.needsRestart.joined(separator: ", "))"])
    }
    return .applied(change)
  }

  private func refuse(_ reason: String) -> Outcome {
    metrics.counter("config_reloads_total", [("result", "refused")]).increment()
    logger.error("config reload refused: the config in force stays", metadata: ["error": "\(reason)"])
    return .refused(reason)
  }
}
