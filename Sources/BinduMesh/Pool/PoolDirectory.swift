import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// Every pool of the mesh and its callback listener, by agent name.
///
/// Declared pools are bound by ``startDeclaredPools()``; a registration for an agent that has no
/// pool makes one with ``pool(forAgent:)``, on the next port of `callbacks`. What registration
/// made is kept in the ``RegistryStore`` (``persist()``) and made again after a restart
/// (``restore(_:)``).
public actor PoolDirectory {
  /// A pool with its listener and the callback address the core is given.
  public struct Entry: Sendable {
    /// The pool.
    public let pool: ReplicaPool
    /// The address bound for the core's calls.
    public let listenAddress: HostPort
    /// The address given to the core as `grpc_callback_address`.
    public let callbackAddress: HostPort
    let listener: CallbackListener
  }

  /// The config in force (a reload replaces it).
  var config: MeshConfig
  /// The settings of calls and connections that a reload changes.
  let settings: LiveSettings
  let dns: DNSDiscovery
  private let group: MultiThreadedEventLoopGroup
  private let loops: [any EventLoop]
  let logger: Logger
  var entries: [String: Entry] = [:]
  var creating: [String: Task<Entry, any Error>] = [:]
  private var madeByRegistration = 0
  private var nextPort: Int

  private let metrics: MeshMetrics
  private let store: RegistryStore
  /// Set when this process handed over to a new one: the state file is the new one's.
  let handedOver: HandedOver
  /// Listening sockets a previous process handed over, by pool, with the address it bound,
  /// until the pool takes its own.
  private var inherited: [String: (address: HostPort, socket: CInt)]
  /// The pools' TLS.
  var tls: PoolTLS

  /// Every TLS context source of the pools, for reloading.
  public var tlsMaterials: [TLSMaterial] { tls.materials }

  init(
    config: MeshConfig, group: MultiThreadedEventLoopGroup, store: RegistryStore, metrics: MeshMetrics,
    dns: DNSDiscovery, handedOver: HandedOver, inherited: [String: (address: HostPort, socket: CInt)],
    logger: Logger
  ) {
    self.handedOver = handedOver
    self.inherited = inherited
    self.config = config
    self.settings = LiveSettings(config)
    self.dns = dns
    self.store = store
    self.metrics = metrics
    self.group = group
    self.loops = Array(group.makeIterator())
    self.logger = logger
    self.tls = PoolTLS(logger: logger)
    self.nextPort = config.callbacks.firstPort
  }

  /// Pools in no particular order.
  public var all: [Entry] { Array(entries.values) }

  /// The pool of `agent`, if it has one.
  public func entry(forAgent agent: String) -> Entry? { entries[agent] }

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
    let task = Task { try await self.bindDynamic(pool, security: listener) }
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
      let members = entry.pool.storedMembers
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
        entry = try await bindRestored(pool, port: stored.callbackPort, security: listener)
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

  /// Binds a restored pool on the port it had, or on the next free one when that is taken.
  private func bindRestored(_ pool: ReplicaPool, port: Int, security: ListenerSecurity?) async throws -> Entry {
    do {
      return try await bind(pool, at: HostPort(host: config.callbacks.listenHost, port: port), security: security)
    } catch {
      logger.warning(
        "cannot listen on a restored pool's port; taking another (the core is told the new one)",
        metadata: ["mesh.pool": "\(pool.name)", "mesh.port": "\(port)", "error": "\(error)"])
      return try await bindDynamic(pool, security: security)
    }
  }

  /// The socket handed over for `pool`, when it listens where the config asks (`address`; any
  /// port for a port of 0); one that does not is closed, and the pool binds its own.
  private func takeInherited(pool: String, address: HostPort) -> CInt? {
    guard let (bound, socket) = inherited.removeValue(forKey: pool) else { return nil }
    let sameHost = bound.host == address.host || (bound.isWildcard && address.isWildcard)
    guard (address.port == 0 || bound.port == address.port) && sameHost else {
      logger.warning(
        "the listener handed over for this pool is not where the config asks: not taken",
        metadata: ["mesh.pool": "\(pool)", "mesh.handed_over": "\(bound)", "mesh.listen": "\(address)"])
      close(socket)
      return nil
    }
    return socket
  }

  /// Closes the sockets handed over that no pool took (pools no longer in the config).
  func closeUnusedInherited() {
    for (pool, (address, socket)) in inherited {
      logger.notice(
        "a listener handed over is not in this config: closed", metadata: ["mesh.pool": "\(pool)", "mesh.listen": "\(address)"])
      close(socket)
    }
    inherited = [:]
  }

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
    security: UpstreamSecurity?
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

  func takeDynamicAddress() -> HostPort {
    // Ports of declared pools, and of every pool bound already (restored ones keep theirs).
    let taken = Set(config.pools.compactMap { $0.listen?.port } + entries.values.map(\.listenAddress.port))
      .subtracting([0])
    if nextPort != 0 { while taken.contains(nextPort) { nextPort += 1 } }
    defer { if nextPort != 0 { nextPort += 1 } }
    return HostPort(host: config.callbacks.listenHost, port: nextPort)
  }

  /// Binds a pool made by registration, moving on to the next port when one is taken.
  private func bindDynamic(_ pool: ReplicaPool, security: ListenerSecurity?) async throws -> Entry {
    var lastError: (any Error)?
    for _ in 0..<8 {
      let address = takeDynamicAddress()
      do {
        return try await bind(pool, at: address, security: security)
      } catch {
        lastError = error
        logger.warning(
          "cannot listen for a new pool, trying the next port",
          metadata: ["mesh.pool": "\(pool.name)", "mesh.listen": "\(address)", "error": "\(error)"])
        if address.port == 0 { break }
      }
    }
    throw lastError!
  }

  func bind(_ pool: ReplicaPool, at address: HostPort, security: ListenerSecurity?) async throws -> Entry {
    let listener: CallbackListener
    do {
      listener = try await CallbackListener.bind(
        pool: pool, address: address, group: group, settings: settings, security: security,
        inherited: takeInherited(pool: pool.name, address: address), logger: logger)
    } catch let error as MeshError {
      throw error
    } catch {
      throw MeshError.listenerFailed(pool: pool.name, address: address, reason: "\(error)")
    }
    let host =
      config.callbacks.advertiseHost
      ?? (listener.localAddress.isWildcard || address.isWildcard ? "127.0.0.1" : address.host)
    return Entry(
      pool: pool, listenAddress: listener.localAddress,
      callbackAddress: HostPort(host: host, port: listener.localAddress.port), listener: listener)
  }
}
