import BinduDataPath
import BinduMeshConfig

/// What a reloaded config changes against the one in force: the declared pools added, removed
/// and changed, whether the live settings (``LiveSettings``) or the global policy changed, and
/// the keys whose new values only a new process takes (a restart or a hand-over).
///
/// A plain value computed from two configs, tested without sockets; ``Mesh/reload()`` applies it.
package struct ConfigChange: Sendable, Hashable {
  /// What changed in one declared pool that a reload applies.
  package struct PoolChange: Sendable, Hashable {
    /// `replicas` differ: new ones join, missing ones drain.
    package var replicas = false
    /// `dns` or `dns_refresh` differ: the pool follows the new name.
    package var dns = false
    /// The pool's own policy (or, without one, the global policy) differs.
    package var policy = false
    /// `listen` differs: a listener is bound at the new address (with the new `listener_tls`).
    package var listener = false
    /// `listener_tls` differs (and `listen` does not): connections accepted from now on use it.
    package var listenerTLS = false
    /// `upstream_tls` differs: connections to the replicas made from now on use it.
    package var upstreamTLS = false

    /// Whether anything differs.
    package var isEmpty: Bool { !(replicas || dns || policy || listener || listenerTLS || upstreamTLS) }
  }

  /// Declared pools in the new config only, by agent.
  package var addedPools: [String] = []
  /// Declared pools in the config in force only, by agent.
  package var removedPools: [String] = []
  /// Declared pools in both whose settings differ, by agent.
  package var changedPools: [String: PoolChange] = [:]
  /// The global policy (`balancer`, `health`, `outlier_detection`, `retry`) differs.
  package var policy = false
  /// The settings of calls and connections (`upstream`, `callbacks` limits, grace period,
  /// access log) differ.
  package var settings = false
  /// Keys whose new values are left for the next start: the reload keeps the values in force.
  package var needsRestart: [String] = []

  /// Whether the reload changes nothing.
  package var isEmpty: Bool {
    addedPools.isEmpty && removedPools.isEmpty && changedPools.isEmpty && !policy && !settings && needsRestart.isEmpty
  }

  /// Compares the config in force (`old`) with a reloaded one (`new`).
  package init(from old: MeshConfig, to new: MeshConfig) {
    policy = old.policy != new.policy
    settings = LiveSettings.Values(old) != LiveSettings.Values(new)
    var restart: [String] = []
    func compare<Value: Equatable>(_ key: String, _ path: KeyPath<MeshConfig, Value>) {
      if old[keyPath: path] != new[keyPath: path] { restart.append(key) }
    }
    compare("core", \.core)
    compare("cores", \.cores)
    compare("registry", \.registry)
    compare("state.dir", \.state.dir)
    compare("tracing", \.tracing)
    compare("admin.listen", \.admin.listen)
    compare("admin.tls_reload_interval", \.admin.tlsReloadInterval)
    compare("admin.token_file", \.admin.tokenFile)
    compare("callbacks.listen_host", \.callbacks.listenHost)
    compare("callbacks.first_port", \.callbacks.firstPort)
    compare("callbacks.max_pools", \.callbacks.maxPools)
    compare("callbacks.advertise_host", \.callbacks.advertiseHost)
    compare("callbacks.tls", \.callbacks.tls)
    compare("callbacks.upstream_tls", \.callbacks.upstreamTLS)

    let before = Dictionary(old.pools.map { ($0.agent, $0) }, uniquingKeysWith: { first, _ in first })
    let after = Dictionary(new.pools.map { ($0.agent, $0) }, uniquingKeysWith: { first, _ in first })
    addedPools = new.pools.map(\.agent).filter { before[$0] == nil }
    removedPools = old.pools.map(\.agent).filter { after[$0] == nil }
    for pool in new.pools {
      guard let was = before[pool.agent] else { continue }
      var change = PoolChange()
      change.replicas = was.replicas != pool.replicas
      change.dns = was.dns != pool.dns || was.dnsRefresh != pool.dnsRefresh
      change.policy = (was.policy ?? old.policy) != (pool.policy ?? new.policy)
      change.listener = was.listen != pool.listen
      change.listenerTLS = was.listenerTLS != pool.listenerTLS && !change.listener
      let prefix = "pools[\(pool.agent)]"
      if was.agentConfigJSON != pool.agentConfigJSON { restart.append("\(prefix).config") }
      if was.skills != pool.skills { restart.append("\(prefix).skills") }
      change.upstreamTLS = was.upstreamTLS != pool.upstreamTLS
      if !change.isEmpty { changedPools[pool.agent] = change }
    }
    needsRestart = restart
  }

  /// The config a reload puts in force: `new`, with the values in force kept for the keys in
  /// ``needsRestart``, so that the next reload still reports them.
  package static func inForce(old: MeshConfig, new: MeshConfig) -> MeshConfig {
    var config = new
    config.core = old.core
    config.cores = old.cores
    config.registry = old.registry
    config.state = old.state
    config.admin.listen = old.admin.listen
    config.admin.tlsReloadInterval = old.admin.tlsReloadInterval
    config.admin.tokenFile = old.admin.tokenFile
    config.callbacks.listenHost = old.callbacks.listenHost
    config.callbacks.firstPort = old.callbacks.firstPort
    config.callbacks.maxPools = old.callbacks.maxPools
    config.callbacks.advertiseHost = old.callbacks.advertiseHost
    config.callbacks.tls = old.callbacks.tls
    config.callbacks.upstreamTLS = old.callbacks.upstreamTLS
    let before = Dictionary(old.pools.map { ($0.agent, $0) }, uniquingKeysWith: { first, _ in first })
    for index in config.pools.indices {
      guard let was = before[config.pools[index].agent] else { continue }
      config.pools[index].agentConfigJSON = was.agentConfigJSON
      config.pools[index].skills = was.skills
    }
    return config
  }

  /// One line for the log and the admin answer.
  package var summary: String {
    var parts: [String] = []
    if !addedPools.isEmpty { parts.append("pools added: \(addedPools.joined(separator: ", "))") }
    if !removedPools.isEmpty { parts.append("pools removed: \(removedPools.joined(separator: ", "))") }
    for (agent, change) in changedPools.sorted(by: { $0.key < $1.key }) {
      let what = [
        change.replicas ? "replicas" : nil, change.dns ? "dns" : nil, change.policy ? "policy" : nil,
        change.listener ? "listener" : nil, change.listenerTLS ? "listener TLS" : nil,
        change.upstreamTLS ? "upstream TLS" : nil,
      ].compactMap { $0 }
      parts.append("pool \(agent): \(what.joined(separator: ", "))")
    }
    if policy { parts.append("global policy") }
    if settings { parts.append("call and connection settings") }
    if !needsRestart.isEmpty { parts.append("left for the next start: \(needsRestart.joined(separator: ", "))") }
    return parts.isEmpty ? "nothing changed" : parts.joined(separator: "; ")
  }
}
