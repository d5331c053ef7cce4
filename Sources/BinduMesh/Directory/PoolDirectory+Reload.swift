import BinduDataPath
import BinduMeshConfig

/// A config reload's changes to the pools: declared pools added (listener bound), removed
/// (listener closed once its calls finish) and changed (replicas, DNS name, policy, listener),
/// and the reloaded policy and settings for every pool.
extension PoolDirectory {
  /// What the registrars must do after a reload.
  struct Reloaded: Sendable {
    /// Declared pools added, to register with the cores when they have a config.
    var added: [Entry] = []
    /// Pools removed: unregister them, then close them (``closeRemoved(_:)``).
    var removed: [Entry] = []
    /// Pools registered with the cores whose `listen` changed: the address in force stays
    /// until the next start.
    var keptListenAddresses: [String] = []
  }

  /// Applies `change` and makes `config` the config in force. New listeners are bound first:
  /// when one cannot be, nothing changes and the error is thrown.
  func reload(to config: MeshConfig, change: ConfigChange) async throws -> Reloaded {
    var config = config
    let byAgent = Dictionary(config.pools.map { ($0.agent, $0) }, uniquingKeysWith: { first, _ in first })
    var reloaded = Reloaded()
    // 1. Listeners that the new config needs, bound before anything changes.
    var rebound: [(old: Entry, new: Entry)] = []
    var retls: [(entry: Entry, security: ListenerTLSContext?)] = []
    var upstreamTLS: [(entry: Entry, security: UpstreamTLSContext?)] = []
    let savedTLS = tls
    do {
      for agent in change.addedPools {
        guard entries[agent] == nil, creating[agent] == nil, let declared = byAgent[agent] else {
          throw MeshError.listenerFailed(
            pool: agent, address: byAgent[agent]?.listen ?? HostPort(host: "", port: 0),
            reason: "a pool made by registration already serves this agent")
        }
        // A replica of this agent registering meanwhile waits for this pool (``pool(forAgent:)``).
        let task = Task { try await self.startDeclared(declared) }
        creating[agent] = task
        defer { creating[agent] = nil }
        reloaded.added.append(try await task.value)
      }
      for (agent, poolChange) in change.changedPools where poolChange.listener {
        guard let old = entries[agent], let declared = byAgent[agent] else { continue }
        if old.pool.definition != nil {
          // Registered with the cores: a Bindu core keeps calling the address it was given when
          // the agent first registered (unregistering does not stop the agent's A2A server, and
          // registering again cannot start another on its port). Keep the address in force.
          reloaded.keptListenAddresses.append(agent)
          if let index = config.pools.firstIndex(where: { $0.agent == agent }),
            let was = self.config.pools.first(where: { $0.agent == agent })
          {
            config.pools[index].listen = was.listen
            if was.listenerTLS != declared.listenerTLS {
              retls.append((old, try declared.listenerTLS.map { try tls.listener($0, use: "callback:\(agent)") }))
            }
          }
          continue
        }
        let address = declared.listen ?? takeDynamicAddress()
        let security = try declared.listenerTLS.map { try tls.listener($0, use: "callback:\(agent)") }
        rebound.append((old, try await bind(old.pool, at: address, security: security)))
      }
      for (agent, poolChange) in change.changedPools where poolChange.listenerTLS {
        guard let entry = entries[agent], let declared = byAgent[agent] else { continue }
        retls.append((entry, try declared.listenerTLS.map { try tls.listener($0, use: "callback:\(agent)") }))
      }
      for (agent, poolChange) in change.changedPools where poolChange.upstreamTLS {
        guard let entry = entries[agent], let declared = byAgent[agent] else { continue }
        upstreamTLS.append(
          (entry, try declared.upstreamTLS.map { try tls.upstream($0, use: "upstream:\(agent)") }))
      }
    } catch {
      tls = savedTLS
      for entry in reloaded.added {
        entries[entry.pool.name] = nil
        dns.stop(entry.pool.name)
        entry.pool.endpoints.forEach { $0.drain() }
        await entry.listener.shutdown(grace: .zero)
      }
      for (_, new) in rebound { await new.listener.shutdown(grace: .zero) }
      throw error
    }
    // 2. Nothing below can fail.
    self.config = config
    settings.update(LiveSettings.Values(config))
    for (old, new) in rebound {
      entries[new.pool.name] = new
      retireListener(old, reason: "its listen address changed")
    }
    for (entry, security) in retls {
      entry.listener.useTLS(security)
      logger.notice(
        "pool listener TLS reloaded: connections accepted from now on use it",
        metadata: ["mesh.pool": "\(entry.pool.name)", "mesh.tls": "\(security != nil)"])
    }
    for (entry, security) in upstreamTLS {
      entry.pool.useTLS(security)
      logger.notice(
        "pool upstream TLS reloaded: connections to its replicas finish their calls and connect again with it",
        metadata: ["mesh.pool": "\(entry.pool.name)", "mesh.tls": "\(security != nil)"])
    }
    for agent in change.removedPools {
      guard let entry = entries.removeValue(forKey: agent) else { continue }
      dns.stop(agent)
      reloaded.removed.append(entry)
    }
    for entry in entries.values {
      let pool = entry.pool
      let declared = pool.declared ? byAgent[pool.name] : nil
      if pool.apply(declared?.policy ?? config.policy) {
        logger.notice("pool policy reloaded: in effect for new calls", metadata: ["mesh.pool": "\(pool.name)"])
      }
      guard let declared, let poolChange = change.changedPools[pool.name] else { continue }
      if poolChange.replicas {
        let (added, removed) = pool.setConfigured(declared.replicas)
        logger.notice(
          "pool replicas reloaded",
          metadata: [
            "mesh.pool": "\(pool.name)", "mesh.added": "\(added.map(\.address.description))",
            "mesh.draining": "\(removed.map(\.address.description))",
          ])
      }
      if poolChange.dns {
        if let name = declared.dns {
          dns.follow(pool, name: name, refresh: declared.dnsRefresh)
        } else {
          dns.stop(pool.name)
          _ = pool.setDiscovered([])
        }
      }
    }
    persist()
    return reloaded
  }

  /// Closes a pool a reload removed, once it is unregistered from the cores (so that no core
  /// calls a closed listener): its listener takes no new connection, its calls finish, then
  /// the connections to its replicas close.
  func closeRemoved(_ entry: Entry) {
    retireListener(entry, reason: "the pool was removed", thenDrainReplicas: true)
  }

  /// Stops a listener that a reload replaced or removed: it takes no new connection, and its
  /// calls in flight have the grace period to finish; then, for a removed pool, the
  /// connections to its replicas close.
  private func retireListener(_ entry: Entry, reason: String, thenDrainReplicas: Bool = false) {
    let grace = config.shutdown.gracePeriod
    logger.notice(
      "closing a callback listener: \(reason); its calls in flight finish",
      metadata: ["mesh.pool": "\(entry.pool.name)", "mesh.listen": "\(entry.listenAddress)"])
    Task {
      await entry.listener.shutdown(grace: grace)
      if thenDrainReplicas { entry.pool.endpoints.forEach { $0.drain() } }
    }
  }
}
