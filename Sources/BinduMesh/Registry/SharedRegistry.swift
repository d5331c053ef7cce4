import BinduDataPath
import BinduMeshConfig
import CoreMetrics
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The registry shared by several meshes in PostgreSQL (`registry.postgres_url`).
///
/// Every mesh writes the registrations it takes (and their pools' definitions) and deletes the
/// members that leave; it reads everything back on each notification of another mesh
/// (LISTEN/NOTIFY) and every ``fullReadPeriod`` as a backstop, and brings its pools in line
/// (``SharedRegistryMerge``). Sightings (heartbeats and passing probes seen here) are recorded
/// every ``sightingPeriod``, so that a replica is evicted only when no mesh has seen it.
///
/// With the database unreachable, the mesh serves from what it knows (and its state file); its
/// writes wait in order and go out once the database is back; and it evicts nobody.
package final class SharedRegistry: Service, Sendable {
  /// How often everything is read again without a notification.
  static let fullReadPeriod: Duration = .seconds(5)
  /// How often this mesh's sightings are written.
  static let sightingPeriod: Duration = .seconds(2)
  /// How often the loop looks for work.
  static let tick: Duration = .milliseconds(100)
  /// A database that has not answered a round of work within this is given up (reconnect).
  static let stallTimeout: Duration = .seconds(15)

  let config: MeshConfig.SharedRegistry
  let replicaTimeout: Duration
  let directory: PoolDirectory
  let registrars: CoreRegistrars
  let logger: Logger
  private let state = Mutex(State())
  private let upGauge: CoreMetrics.Gauge
  private let lagGauge: CoreMetrics.Gauge
  private let pendingGauge: CoreMetrics.Gauge
  private let writeErrors: CoreMetrics.Counter

  struct State {
    var pending: [SharedRegistryWrite] = []
    /// Members registering here, not yet written: the merge must not remove them.
    var joining: Set<String> = []
    /// Members the database has had.
    var known: Set<String> = []
    var database: SharedRegistryDatabase?
    var lastRead: ContinuousClock.Instant?
    var lastProgress: ContinuousClock.Instant = .now
    var notified = false
    var writeErrors = 0
    var lastError: String?
    var conflictsSaid: Set<String> = []
  }

  init(
    config: MeshConfig.SharedRegistry, replicaTimeout: Duration, directory: PoolDirectory, registrars: CoreRegistrars,
    metrics: MeshMetrics, logger: Logger
  ) {
    self.config = config
    self.replicaTimeout = replicaTimeout
    self.directory = directory
    self.registrars = registrars
    self.logger = logger
    upGauge = metrics.gauge("registry_store_up", [])
    lagGauge = metrics.gauge("registry_store_lag_seconds", [])
    pendingGauge = metrics.gauge("registry_store_pending_writes", [])
    writeErrors = metrics.counter("registry_store_write_errors_total", [])
    upGauge.record(0)
  }

  // MARK: What the registry and the evictor tell it

  /// A replica is registering here under `id`: not yet written, not to be removed by a merge.
  func joining(_ id: String) { _ = state.withLock { $0.joining.insert(id) } }

  /// The registration of `id` did not complete.
  func abandoned(_ id: String) { _ = state.withLock { $0.joining.remove(id) } }

  /// A replica joined `definition`'s pool here; `replaced`, its earlier memberships at that address.
  func joined(_ id: String, agent: String, address: HostPort, definition: AgentDefinition, replaced: [String]) {
    enqueue(
      [.pool(agent: agent, configJSON: definition.configJSON, skills: definition.skillsJSON),
       .member(id: id, agent: agent, address: address.description)] + replaced.map { .remove(id: $0) },
      joined: id)
  }

  /// A replica unregistered here.
  func left(_ id: String) { enqueue([.remove(id: id)]) }

  /// Replicas this mesh evicted: deleted unless another mesh saw them within the timeout.
  func evicted(_ ids: [String]) { enqueue(ids.map { .evict(id: $0, timeout: replicaTimeout) }) }

  private func enqueue(_ writes: [SharedRegistryWrite], joined: String? = nil) {
    let count = state.withLock { state in
      state.pending += writes
      if let joined { state.joining.remove(joined) }
      return state.pending.count
    }
    pendingGauge.record(count)
  }

  /// Whether the mesh may evict: only with a current view of every mesh's sightings, never
  /// because the database is gone.
  var allowsEviction: Bool {
    state.withLock { state in
      state.database != nil && state.lastRead.map { ContinuousClock.now - $0 < Self.fullReadPeriod * 3 } ?? false
    }
  }

  /// Why a replica with `definition` cannot join its pool: the shared registry holds another
  /// definition for the agent. `nil` when it holds the same, none (this one is then written) or
  /// cannot be asked within 2 s (the pool's own check stands).
  func conflict(with definition: AgentDefinition) async -> String? {
    guard let database = state.withLock({ $0.database }) else { return nil }
    let stored = try? await withTimeout(.seconds(2)) {
      try await database.claimPool(agent: definition.name, configJSON: definition.configJSON, skills: definition.skillsJSON)
    }
    guard let stored, let shared = try? AgentDefinition(configJSON: stored.configJSON, skillsJSON: stored.skills) else {
      return nil
    }
    return shared.conflict(with: definition).map { "\($0) (the definition held by the shared registry)" }
  }

  /// The store's state, for `/status`.
  var status: SharedRegistryView {
    state.withLock { state in
      SharedRegistryView(
        database: config.url.description, meshID: config.meshID, up: state.database != nil,
        lagSeconds: state.lastRead.map { (ContinuousClock.now - $0).secondsValue }, pendingWrites: state.pending.count,
        writeErrors: state.writeErrors, lastError: state.lastError)
    }
  }

  // MARK: The loop

  package func run() async throws {
    var backoff: Duration = .milliseconds(250)
    var saidDown = false
    while !Task.isShuttingDownGracefully {
      do {
        let database = try await SharedRegistryDatabase.connect(config, logger: logger)
        do {
          try await serve(database)
        } catch {
          await database.close()
          throw error
        }
        await database.close()
      } catch {
        if Task.isShuttingDownGracefully || Task.isCancelled { break }
        let wasUp = state.withLock { state -> Bool in
          defer {
            state.database = nil
            state.lastError = "\(String(reflecting: error))"
          }
          return state.database != nil
        }
        upGauge.record(0)
        if wasUp || !saidDown {
          logger.warning(
            "shared registry unreachable: serving from what this mesh knows; its changes wait for the database",
            metadata: ["mesh.database": "\(config.url)", "error": "\(Self.describe(error))"])
          saidDown = true
        }
        if wasUp { backoff = .milliseconds(250) }
      }
      let wait = backoff
      do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) } } catch { break }
      backoff = min(backoff * 2, .seconds(5))
    }
  }

  private func serve(_ database: SharedRegistryDatabase) async throws {
    try await database.migrate()
    try await database.connection.listen(on: SharedRegistryDatabase.channel) { notifications in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          for try await notification in notifications where notification.payload != self.config.meshID {
            self.state.withLock { $0.notified = true }
          }
          throw PostgresNotificationEnded()
        }
        group.addTask { try await self.work(database) }
        group.addTask {
          // A database that stops answering (a host gone, packets dropped) is given up.
          while true {
            try await Task.sleep(for: .seconds(1))
            let stalled = self.state.withLock { ContinuousClock.now - $0.lastProgress > Self.stallTimeout }
            if stalled {
              await database.close()
              throw SharedRegistryStalled()
            }
          }
        }
        defer { group.cancelAll() }
        try await group.next()
      }
    }
  }

  private func work(_ database: SharedRegistryDatabase) async throws {
    state.withLock { $0.lastProgress = .now }
    var lastSightings = ContinuousClock.now
    var first = true
    while !Task.isShuttingDownGracefully {
      let now = ContinuousClock.now
      try await flush(database)
      if now - lastSightings >= Self.sightingPeriod {
        try await database.recordSightings(await directory.membersSeenHere(since: lastSightings))
        lastSightings = now
      }
      let due = state.withLock { state in
        defer { state.notified = false }
        return state.notified || state.lastRead.map { now - $0 >= Self.fullReadPeriod } ?? true
      }
      if due || first {
        let rows = try await database.read()
        await apply(rows)
        if first {
          state.withLock { $0.database = database }
          upGauge.record(1)
          logger.notice(
            "shared registry connected", metadata: ["mesh.database": "\(config.url)", "mesh.id": "\(config.meshID)"])
          first = false
        }
      }
      state.withLock { $0.lastProgress = .now }
      lagGauge.record(state.withLock { $0.lastRead.map { (ContinuousClock.now - $0).secondsValue } ?? 0 })
      try await Task.sleep(for: Self.tick)
    }
  }

  /// Runs the waiting writes in order; a write that fails stays first, for the next connection.
  private func flush(_ database: SharedRegistryDatabase) async throws {
    var changed = false
    while let write = state.withLock({ $0.pending.first }) {
      do {
        try await database.write(write)
      } catch {
        state.withLock { $0.writeErrors += 1 }
        writeErrors.increment()
        throw error
      }
      let count = state.withLock { state in
        state.pending.removeFirst()
        if let id = write.added { state.known.insert(id) }
        return state.pending.count
      }
      pendingGauge.record(count)
      changed = true
    }
    if changed { try await database.notify() }
  }

  private func apply(_ rows: SharedRegistryRows) async {
    let (adds, removals, known) = state.withLock { state in
      (Set(state.pending.compactMap(\.added)).union(state.joining), Set(state.pending.compactMap(\.removed)), state.known)
    }
    let merged = await directory.mergeShared(rows, pendingAdds: adds, pendingRemovals: removals, known: known)
    let newConflicts = state.withLock { state in
      state.known.formUnion(rows.members.keys)
      state.lastRead = .now
      let new = merged.plan.conflicts.filter { !state.conflictsSaid.contains($0.key) }
      state.conflictsSaid = Set(merged.plan.conflicts.keys)
      return new
    }
    for (agent, reason) in newConflicts.sorted(by: { $0.key < $1.key }) {
      logger.error("shared registry: pool conflict", metadata: ["mesh.pool": "\(agent)", "reason": "\(reason)"])
    }
    if !merged.toShare.isEmpty { enqueue(merged.toShare) }
    for (entry, definition) in merged.toRegister {
      if case .refused(let reason) = registrars.check(definition) {
        logger.error(
          "a pool of the shared registry cannot be registered with this mesh's cores",
          metadata: ["mesh.pool": "\(entry.pool.name)", "reason": "\(reason)"])
        continue
      }
      _ = registrars.register(entry, definition: definition)
    }
    if merged.plan.changesMembership { await directory.persist() }
  }
}
