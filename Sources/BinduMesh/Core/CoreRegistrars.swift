import BinduDataPath
import BinduMeshConfig
import GRPCNIOTransportHTTP2
import Logging

/// Every core the mesh registers its pools with: one ``CoreRegistrar`` per core, each keeping
/// its own registration alive (heartbeats, registering again after that core restarts,
/// unregistering on shutdown).
///
/// Several cores share one Redis scheduler and one Postgres storage (Bindu's scale-out), so a
/// pool's agent is registered with each of them; a replica that registers is answered once one
/// core has accepted the agent.
package final class CoreRegistrars: Sendable {
  /// One registrar per core, in config order.
  package let all: [CoreRegistrar]
  private let logger: Logger

  init(
    config: MeshConfig, security: HTTP2ClientTransport.Posix.TransportSecurity, metrics: MeshMetrics,
    handedOver: HandedOver, tracer: MeshTracer? = nil, logger: Logger
  ) {
    self.all = config.coreTargets.map {
      CoreRegistrar(
        target: $0, config: config.core, security: security, metrics: metrics, handedOver: handedOver, tracer: tracer,
        logger: logger)
    }
    self.logger = logger
  }

  /// How many cores there are.
  package var count: Int { all.count }

  /// Whether `definition` can be shared by these cores: refused when it names an in-memory
  /// scheduler or storage and there are several cores.
  package func check(_ definition: AgentDefinition) -> SharedBacking {
    SharedBacking.check(configJSON: definition.configJSON, cores: count)
  }

  /// The registrations of `entry`'s pool with every core, started with `definition` where there
  /// is none yet. Warns, once per pool, when the config leaves its storage to the cores.
  func register(_ entry: PoolDirectory.Entry, definition: AgentDefinition) -> [PoolRegistration] {
    let made = all.map { $0.register(entry, definition: definition) }
    if made.contains(where: \.isNew), case .unknown(let warning) = check(definition) {
      logger.warning("\(warning)", metadata: ["mesh.pool": "\(entry.pool.name)"])
    }
    return made.map(\.registration)
  }

  /// Ends the registrations of `agent`'s pool with every core: they stop and unregister.
  func retire(agent: String) async {
    await withTaskGroup(of: Void.self) { group in
      for registrar in all { group.addTask { await registrar.retire(agent: agent) } }
    }
  }

  /// The registrations of `agent`'s pool, one per core that has one, in config order.
  package func registrations(forAgent agent: String) -> [PoolRegistration] {
    all.compactMap { $0.registration(forAgent: agent) }
  }

  /// Waits until one core has accepted the agent, or each has accepted or refused it, at most
  /// `timeout`; the phases in the order of `registrations` (those not settled when one accepted
  /// are `pending`).
  func settled(_ registrations: [PoolRegistration], within timeout: Duration) async -> [PoolRegistration.Phase] {
    await withTaskGroup(of: (Int, PoolRegistration.Phase).self) { group in
      for (index, registration) in registrations.enumerated() {
        group.addTask { (index, await registration.settled(within: timeout)) }
      }
      var phases = [PoolRegistration.Phase](repeating: .pending(lastError: nil), count: registrations.count)
      for await (index, phase) in group {
        phases[index] = phase
        if phase.isRegistered { group.cancelAll() }  // enough to answer; the others go on in the background
      }
      return phases
    }
  }
}
