import BinduDataPath
import BinduMeshConfig
import Logging
import NIOCore

/// Every pool of the mesh and its callback listener, by agent name.
///
/// Declared pools are bound by ``startDeclaredPools()``; a registration for an agent that has no
/// pool makes one with ``pool(forAgent:)``, on the next port of `callbacks`. What registration
/// made is kept in the ``RegistryStore`` (``persist()``) and made again after a restart
/// (``restore(_:)``). The listeners are bound by the ``CallbackListenerBinder`` it is given.
package actor PoolDirectory {
  /// A pool with its listener and the callback address the core is given.
  package struct Entry: Sendable {
    /// The pool.
    package let pool: ReplicaPool
    /// The address bound for the core's calls.
    package let listenAddress: HostPort
    /// The address given to the core as `grpc_callback_address`.
    package let callbackAddress: HostPort
    let listener: CallbackListener

    /// `asked` is the address the listener was asked to bind; the core is given
    /// `callbacks.advertise_host`, or the host bound (127.0.0.1 for a wildcard).
    init(pool: ReplicaPool, listener: CallbackListener, asked: HostPort, advertiseHost: String?) {
      self.pool = pool
      self.listener = listener
      self.listenAddress = listener.localAddress
      let host = advertiseHost ?? (listener.localAddress.isWildcard || asked.isWildcard ? "127.0.0.1" : asked.host)
      self.callbackAddress = HostPort(host: host, port: listener.localAddress.port)
    }
  }

  /// The config in force (a reload replaces it).
  var config: MeshConfig
  /// The settings of calls and connections that a reload changes.
  let settings: LiveSettings
  let dns: DNSDiscovery
  private let listeners: CallbackListenerBinder
  private let loops: [any EventLoop]
  let logger: Logger
  var entries: [String: Entry] = [:]
  var creating: [String: Task<Entry, any Error>] = [:]
  private var madeByRegistration = 0

  private let metrics: MeshMetrics
  private let store: RegistryStore
  /// Set when this process handed over to a new one: the state file is the new one's.
  let handedOver: HandedOver
  /// The pools' TLS.
  var tls: PoolTLS

  /// Every TLS context source of the pools, for reloading.
  package var tlsMaterials: [TLSMaterial] { tls.materials }

  /// `settings` are the ones `listeners` gives the callback listeners; `loops`, the event loops
  /// the pools' endpoints connect from.
  init(
    config: MeshConfig, settings: LiveSettings, loops: [any EventLoop], listeners: CallbackListenerBinder,
    store: RegistryStore, metrics: MeshMetrics, dns: DNSDiscovery, handedOver: HandedOver, logger: Logger
  ) {
    self.handedOver = handedOver
    self.config = config
    self.settings = settings
    self.dns = dns
    self.store = store
    self.metrics = metrics
    self.listeners = listeners
    self.loops = loops
    self.logger = logger
    self.tls = PoolTLS(logger: logger)
  }

  /// Pools in no particular order.
  package var all: [Entry] { Array(entries.values) }

  /// The pool of `agent`, if it has one.
  package func entry(forAgent agent: String) -> Entry? { entries[agent] }

  /// The pool that has `membershipID` as a member.
  func pool(withMember membershipID: String) -> ReplicaPool? {
    entries.values.first { $0.pool.hasMember(membershipID) }?.pool
  }

  /// Binds the listeners of the declared pools, adds their static replicas and follows their
  /// DNS names.
  func startDeclaredPools() async throws -> [Entry] {
    var started: [Entry] = []
    for declared in config.pools {
      started.append(try await startDeclared(declared))
    }
    return started
  }

  /// Binds one declared pool's listener, adds its static replicas and follows its DNS name.
  func startDeclared(_ declared: MeshConfig.Pool) async throws -> Entry {
    var definition: AgentDefinition?
    if let json = declared.agentConfigJSON {
      definition = try AgentDefinition(configJSON: json, skills: declared.skills.map(\.definition))
    }
    let upstream = try declared.upstreamTLS.map { try tls.upstream($0, use: "upstream:\(declared.agent)") }
    let pool = makePool(
      name: declared.agent, declared: true, definition: definition, policy: declared.policy, security: upstream)
    declared.replicas.forEach(pool.addConfigured)
    let address = declared.listen ?? takeDynamicAddress()
    let listener = try declared.listenerTLS.map { try tls.listener($0, use: "callback:\(declared.agent)") }
    let entry = try await bind(pool, at: address, security: listener)
    entries[declared.agent] = entry
    if let name = declared.dns { dns.follow(pool, name: name, refresh: declared.dnsRefresh) }
    return entry
  }

  /// The pool of `agent`, made (and its listener bound) if it has none.
  func pool(forAgent agent: String) async throws -> Entry {
    if let entry = entries[agent] { return entry }
    if let task = creating[agent] { return try await task.value }
    guard madeByRegistration < config.callbacks.maxPools else {
      throw MeshError.tooManyPools(limit: config.callbacks.maxPools)
    }
    madeByRegistration += 1
    let upstream = try tls.registrationUpstream(config.callbacks)
    let pool = makePool(name: agent, declared: false, definition: nil, policy: nil, security: upstream)
    let listener = try tls.registrationListener(config.callbacks)
    let task = Task { try await self.bindMadeByRegistration(pool, restoredPort: nil, security: listener) }
    creating[agent] = task
    defer { creating[agent] = nil }
    do {
      let entry = try await task.value
      entries[agent] = entry
      return entry
    } catch {
      madeByRegistration -= 1
      throw error
    }
  }

  /// Writes every pool's definition, callback port and registered members to the state file,
  /// before a replica is told it joined or after members leave. A write that fails is logged:
  /// the mesh goes on serving, but would forget the change if it restarted.
  func persist() {
    guard handedOver.writesState else { return }
    let pools = entries.values.compactMap { entry -> RegistrySnapshot.Pool? in
      let definition = entry.pool.definition
      let members = entry.pool.registeredMembers.map { RegistrySnapshot.Member(id: $0.id, address: $0.address.description) }
      guard definition != nil || !members.isEmpty else { return nil }
      return RegistrySnapshot.Pool(
        agent: entry.pool.name, declared: entry.pool.declared, callbackPort: entry.listenAddress.port,
        configJSON: definition?.configJSON, skills: definition?.skillsJSON ?? [], members: members)
    }
    do {
      try store.save(RegistrySnapshot(format: RegistrySnapshot.currentFormat, pools: pools.sorted { $0.agent < $1.agent }))
    } catch {
      logger.error("cannot save the registry: a restart would lose the latest change", metadata: ["error": "\(error)"])
    }
  }

  /// Makes again what `snapshot` kept: pools made by registration, on their callback ports when
  /// free, and every registered member (they take calls after their first passing probe).
  /// Returns the pools to register with the core.
  func restore(_ snapshot: RegistrySnapshot) async throws -> [(entry: Entry, definition: AgentDefinition)] {
    var toRegister: [(entry: Entry, definition: AgentDefinition)] = []
    for stored in snapshot.pools {
      let entry: Entry
      if let declared = entries[stored.agent] {
        entry = declared
        // A declared pool without a config took its definition from its first replica.
        if declared.pool.definition == nil, let definition = try storedDefinition(stored) {
          declared.pool.adopt(definition)
          toRegister.append((entry, definition))
        }
      } else if stored.declared {
        logger.warning(
          "a pool kept in the state file is no longer declared: its replicas are dropped",
          metadata: ["mesh.pool": "\(stored.agent)", "mesh.members": "\(stored.members.count)"])
        continue
      } else {
        guard let definition = try storedDefinition(stored) else { continue }
        madeByRegistration += 1
        let pool = makePool(
          name: stored.agent, declared: false, definition: definition, policy: nil,
          security: try tls.registrationUpstream(config.callbacks))
        let listener = try tls.registrationListener(config.callbacks)
        entry = try await bindMadeByRegistration(pool, restoredPort: stored.callbackPort, security: listener)
        entries[stored.agent] = entry
        toRegister.append((entry, definition))
      }
      for member in stored.members {
        guard let address = HostPort(parsing: member.address) else {
          throw StateError(path: store.path, reason: "pool \"\(stored.agent)\": member \(member.id) has no host:port address")
        }
        let endpoint = entry.pool.restore(membershipID: member.id, address: address)
        logger.notice(
          "replica restored", metadata: ["mesh.pool": "\(stored.agent)", "mesh.replica": "\(endpoint)"])
      }
    }
    return toRegister
  }

  private func storedDefinition(_ stored: RegistrySnapshot.Pool) throws -> AgentDefinition? {
    do { return try stored.definition() } catch {
      throw StateError(path: store.path, reason: "pool \"\(stored.agent)\": \(error)")
    }
  }

  /// Closes the sockets handed over that no pool took (pools no longer in the config).
  func closeUnusedInherited() { listeners.closeUnusedInherited() }

  /// Stops every listener: no new calls; open calls get `grace` to finish.
  func shutdownListeners(grace: Duration) async {
    await withTaskGroup(of: Void.self) { group in
      for entry in entries.values {
        group.addTask { await entry.listener.shutdown(grace: grace) }
      }
    }
  }

  private func makePool(
    name: String, declared: Bool, definition: AgentDefinition?, policy: MeshConfig.Policy?,
    security: UpstreamTLSContext?
  ) -> ReplicaPool {
    ReplicaPool(
      name: name, declared: declared, definition: definition, policy: policy ?? config.policy, loops: loops,
      settings: settings, metrics: metrics, security: security,
      logger: logger)
  }

  /// Builds the TLS of pools made by registration now, so bad files fail the start.
  func prepareRegistrationTLS() throws {
    _ = try tls.registrationListener(config.callbacks)
    _ = try tls.registrationUpstream(config.callbacks)
  }

  /// The ports of the declared pools and of every pool bound already (restored ones keep theirs),
  /// which a pool without an address of its own does not take.
  private var takenPorts: Set<Int> {
    Set(config.pools.compactMap { $0.listen?.port } + entries.values.map(\.listenAddress.port)).subtracting([0])
  }

  /// The address for a pool without a `listen` of its own.
  func takeDynamicAddress() -> HostPort {
    listeners.nextAddress(host: config.callbacks.listenHost, taken: takenPorts)
  }

  /// Binds `pool`'s listener at `address`.
  func bind(_ pool: ReplicaPool, at address: HostPort, security: ListenerTLSContext?) async throws -> Entry {
    entry(pool, try await listeners.bind(pool, at: address, security: security, key: "pools[].listen"), asked: address)
  }

  /// Binds the listener of a pool made by registration on `callbacks.listen_host`: on the port it
  /// had before a restart when it can, otherwise on the next free one.
  private func bindMadeByRegistration(
    _ pool: ReplicaPool, restoredPort: Int?, security: ListenerTLSContext?
  ) async throws -> Entry {
    let host = config.callbacks.listenHost
    let taken: @Sendable () async -> Set<Int> = { await self.takenPorts }
    let listener =
      if let restoredPort {
        try await listeners.bindRestored(pool, port: restoredPort, host: host, taken: taken, security: security)
      } else {
        try await listeners.bindDynamic(pool, host: host, taken: taken, security: security)
      }
    return entry(pool, listener, asked: HostPort(host: host, port: 0))
  }

  private func entry(_ pool: ReplicaPool, _ listener: CallbackListener, asked: HostPort) -> Entry {
    Entry(pool: pool, listener: listener, asked: asked, advertiseHost: config.callbacks.advertiseHost)
  }
}
