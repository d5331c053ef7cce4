import Foundation
import Yams

extension MeshConfig {
  /// Reads a YAML config file; keys left out keep their defaults.
  ///
  /// - Throws: ``ConfigError`` naming the file, the position, the key and what was expected.
  package static func load(file path: String) throws -> MeshConfig {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigError(source: path, key: "", message: "cannot read the file")
    }
    let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
    return try MeshConfig(yaml: String(decoding: data, as: UTF8.self), source: path, baseDirectory: base)
  }

  /// Parses YAML text; `source` names it in errors, relative file names start at `baseDirectory`.
  package init(yaml: String, source: String, baseDirectory: String = ".") throws {
    let root: Node
    do {
      guard let node = try Yams.compose(yaml: yaml) else { self = .defaults; return }
      root = node
    } catch let error as YamlError {
      throw ConfigError(source: source, key: "", message: "not valid YAML: \(error)")
    }
    let reader = YAMLReader(node: root, path: "", source: source, baseDirectory: baseDirectory)
    let top = try reader.mapping(keys: ConfigKeys.top)
    var config = MeshConfig.defaults
    if let core = top["core"] { try config.core.read(core) }
    if let cores = top["cores"] {
      if let address = try top["core"]?.mapping(keys: ConfigKeys.core)["address"] {
        throw address.error("the config lists cores: give each core's address there, not core.address")
      }
      let readers = try cores.sequence()
      config.cores = try readers.map { try MeshConfig.CoreTarget(reading: $0) }
      var seen: Set<HostPort> = []
      for (target, reader) in zip(config.cores, readers) where !seen.insert(target.address).inserted {
        throw reader.error("core \(target.address) is listed more than once")
      }
      if config.cores.isEmpty { throw cores.error("expected at least one core (or leave cores out and use core.address)") }
    }
    if let registry = top["registry"] { try config.registry.read(registry) }
    if let callbacks = top["callbacks"] {
      try config.callbacks.read(callbacks)
      let least = config.callbacks.leastBufferedBytes
      if config.callbacks.maxBufferedBytes < least {
        let key = try callbacks.mapping(keys: ConfigKeys.callbacks)["max_buffered_bytes"] ?? callbacks
        throw key.error(
          "max_buffered_bytes must be at least \(least) with max_concurrent_streams \(config.callbacks.maxConcurrentStreams)"
            + " (64 KiB per stream and one 1 MiB window)")
      }
    }
    if let upstream = top["upstream"] { try config.upstream.read(upstream) }
    if let shutdown = top["shutdown"] {
      let keys = try shutdown.mapping(keys: ConfigKeys.shutdown)
      if let value = keys["grace_period"] { config.shutdown.gracePeriod = try value.duration() }
    }
    if let admin = top["admin"] {
      let keys = try admin.mapping(keys: ConfigKeys.admin)
      if let value = keys["tls_reload_interval"] { config.admin.tlsReloadInterval = try value.duration() }
      if let value = keys["token_file"] { config.admin.tokenFile = try value.string() }
      if let value = keys["listen"] { config.admin.listen = try value.hostPort() }
      if let value = keys["access_log"] { config.admin.accessLog = try value.bool() }
    }
    if let state = top["state"] {
      let keys = try state.mapping(keys: ConfigKeys.state)
      if let value = keys["dir"] {
        config.state.dir = try value.string()
        guard !config.state.dir.isEmpty else { throw value.error("expected a folder path") }
      }
    }
    if let tracing = top["tracing"] { try config.tracing.read(tracing) }
    try config.policy.read(top)
    if let pools = top["pools"] {
      let policy = config.policy
      config.pools = try pools.sequence().map { try Pool(reading: $0, baseDirectory: baseDirectory, policy: policy) }
      try Self.checkUnique(config.pools, readers: try pools.sequence())
    }
    self = config
  }

  private static func checkUnique(_ pools: [Pool], readers: [YAMLReader]) throws {
    var agents: Set<String> = []
    var listens: Set<HostPort> = []
    for (pool, reader) in zip(pools, readers) {
      guard agents.insert(pool.agent).inserted else {
        throw reader.error("agent \"\(pool.agent)\" is declared by more than one pool")
      }
      if let listen = pool.listen, listen.port != 0, !listens.insert(listen).inserted {
        throw reader.error("listen \(listen) is used by more than one pool")
      }
    }
  }
}

extension MeshConfig.Core {
  mutating func read(_ reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.core)
    if let value = keys["tls"] { tls = try MeshConfig.ClientTLS(reading: value) }
    if let value = keys["address"] { address = try value.hostPort() }
    if let value = keys["heartbeat_interval"] { heartbeatInterval = try value.duration() }
    if let value = keys["call_timeout"] { callTimeout = try value.duration() }
    if let value = keys["retry_initial_backoff"] { retryInitialBackoff = try value.duration() }
    if let value = keys["retry_max_backoff"] { retryMaxBackoff = try value.duration() }
  }
}

extension MeshConfig.CoreTarget {
  init(reading reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.coreTarget)
    guard let address = keys["address"] else { throw reader.error("missing key \"address\" (the core's host:port)") }
    self.init(address: try address.hostPort())
    if let value = keys["agent_url"] {
      let url = try value.string()
      guard let parsed = URL(string: url), parsed.scheme != nil, parsed.host != nil else {
        throw value.error("expected a URL such as http://localhost:3773, got \"\(url)\"")
      }
      agentURL = url
    }
  }
}

extension MeshConfig.Registry {
  mutating func read(_ reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.registry)
    if let value = keys["tls"] { tls = try MeshConfig.ListenerTLS(reading: value) }
    if let value = keys["listen"] { listen = try value.hostPort() }
    if let value = keys["replica_timeout"] { replicaTimeout = try value.duration() }
    if let value = keys["core_wait"] { coreWait = try value.duration() }
    if let value = keys["rewrite_loopback_callbacks"] { rewriteLoopbackCallbacks = try value.bool() }
    if let value = keys["postgres_url"] {
      let url: MeshConfig.PostgresURL
      do { url = try MeshConfig.PostgresURL(parsing: try value.string()) } catch let invalid as MeshConfig.PostgresURL.Invalid {
        throw value.error(invalid.reason)
      }
      var shared = MeshConfig.SharedRegistry(url: url, origin: value.error(""))
      if let id = keys["mesh_id"] {
        shared.meshID = try id.string()
        guard !shared.meshID.isEmpty, shared.meshID.count <= 200 else { throw id.error("expected a name of 1-200 characters") }
      }
      if let tls = keys["postgres_tls"] { shared.tls = try MeshConfig.ClientTLS(reading: tls) }
      if let host = keys["advertise_host"] {
        let name = try host.string()
        guard HostPort(parsing: "\(name.contains(":") ? "[\(name)]" : name):1") != nil, !name.isEmpty,
          !HostPort(host: name, port: 1).isLoopback, !HostPort(host: name, port: 1).isWildcard
        else { throw host.error("expected a host name or IP address the other meshes reach, not a loopback or wildcard one") }
        shared.advertiseHost = name
      }
      self.shared = shared
    } else if let key = keys["mesh_id"] ?? keys["postgres_tls"] ?? keys["advertise_host"] {
      throw key.error("needs registry.postgres_url (a registry shared in PostgreSQL)")
    }
  }
}

extension MeshConfig.Callbacks {
  mutating func read(_ reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.callbacks)
    if let value = keys["tls"] { tls = try MeshConfig.ListenerTLS(reading: value) }
    if let value = keys["upstream_tls"] { upstreamTLS = try MeshConfig.ClientTLS(reading: value) }
    if let value = keys["listen_host"] { listenHost = try value.string() }
    if let value = keys["first_port"] { firstPort = try value.int(in: 0...65535) }
    if let value = keys["max_pools"] { maxPools = try value.int(in: 0...10_000) }
    if let value = keys["advertise_host"] { advertiseHost = try value.string() }
    if let value = keys["max_concurrent_streams"] { maxConcurrentStreams = try value.int(in: 1...100_000) }
    if let value = keys["preface_timeout"] { prefaceTimeout = try value.duration() }
    if let value = keys["idle_timeout"] { idleTimeout = try value.optionalDuration() }
    if let value = keys["stalled_window_timeout"] { stalledWindowTimeout = try value.optionalDuration() }
    if let value = keys["max_buffered_bytes"] { maxBufferedBytes = try value.int(in: (1 << 20)...(1 << 30)) }
  }
}

extension MeshConfig.Upstream {
  mutating func read(_ reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.upstream)
    if let value = keys["connect_timeout"] { connectTimeout = try value.duration() }
    if let value = keys["max_message_bytes"] { maxMessageBytes = try value.int(in: 1...(64 << 20)) }
    if let value = keys["max_concurrent_streams"] { maxConcurrentStreams = try value.int(in: 1...100_000) }
    if let value = keys["reconnect_max_backoff"] { reconnectMaxBackoff = try value.duration() }
    if let value = keys["idle_timeout"] { idleTimeout = try value.optionalDuration() }
    if let value = keys["keepalive_interval"] { keepaliveInterval = try value.optionalDuration() }
    if let value = keys["keepalive_timeout"] { keepaliveTimeout = try value.duration() }
    if let value = keys["default_call_timeout"] { defaultCallTimeout = try value.optionalDuration() }
    if let value = keys["max_header_list_size"] { maxHeaderListSize = try value.int(in: 1024...(1 << 20)) }
  }
}

extension MeshConfig.Pool {
  init(reading reader: YAMLReader, baseDirectory: String, policy: MeshConfig.Policy) throws {
    let keys = try reader.mapping(keys: ConfigKeys.pool)
    guard let agent = keys["agent"] else { throw reader.error("missing key \"agent\" (the agent's name)") }
    self.init(agent: try agent.string())
    if let value = keys["listener_tls"] { listenerTLS = try MeshConfig.ListenerTLS(reading: value) }
    if let value = keys["upstream_tls"] { upstreamTLS = try MeshConfig.ClientTLS(reading: value) }
    if let value = keys["listen"] { listen = try value.hostPort() }
    switch (keys["config"], keys["config_file"]) {
    case (.some(let inline), .some):
      throw inline.error("give either config or config_file, not both")
    case (.some(let inline), nil):
      agentConfigJSON = try inline.json()
    case (nil, .some(let file)):
      let path = Self.resolve(try file.string(), in: baseDirectory)
      guard let data = FileManager.default.contents(atPath: path) else { throw file.error("cannot read \(path)") }
      agentConfigJSON = String(decoding: data, as: UTF8.self)
    case (nil, nil):
      break
    }
    if let json = agentConfigJSON {
      let at = keys["config"] ?? keys["config_file"]!
      let definition: AgentDefinition
      do { definition = try AgentDefinition(configJSON: json, skills: []) } catch { throw at.error("\(error)") }
      guard definition.name == self.agent else {
        throw at.error("the config's name is \"\(definition.name)\" but the pool's agent is \"\(self.agent)\"")
      }
    }
    if let value = keys["skills"] {
      skills = try value.sequence().map { try MeshConfig.Skill(reading: $0, baseDirectory: baseDirectory) }
    }
    if let value = keys["replicas"] { replicas = try value.sequence().map { try $0.hostPort() } }
    if let value = keys["dns"] {
      let address = try value.hostPort()
      guard address.port != 0 else { throw value.error("expected the replicas' port, got 0") }
      dns = address
    }
    if let value = keys["dns_refresh"] { dnsRefresh = try value.duration() }
    if keys["balancer"] != nil || keys["health"] != nil || keys["outlier_detection"] != nil || keys["retry"] != nil {
      var own = policy
      try own.read(keys)
      self.policy = own
    }
  }

  static func resolve(_ path: String, in base: String) -> String {
    path.hasPrefix("/") ? path : URL(fileURLWithPath: base).appendingPathComponent(path).path
  }
}

extension MeshConfig.Skill {
  init(reading reader: YAMLReader, baseDirectory: String) throws {
    let keys = try reader.mapping(keys: ConfigKeys.skill)
    guard let name = keys["name"] else { throw reader.error("missing key \"name\"") }
    self.init(name: try name.string())
    if let value = keys["description"] { description = try value.string() }
    if let value = keys["tags"] { tags = try value.strings() }
    if let value = keys["input_modes"] { inputModes = try value.strings() }
    if let value = keys["output_modes"] { outputModes = try value.strings() }
    if let value = keys["version"] { version = try value.string() }
    if let value = keys["author"] { author = try value.string() }
    if let value = keys["format"] { format = try value.string() }
    if let value = keys["raw_content"] { rawContent = try value.string() }
    if let value = keys["file"] {
      let path = MeshConfig.Pool.resolve(try value.string(), in: baseDirectory)
      guard let data = FileManager.default.contents(atPath: path) else { throw value.error("cannot read \(path)") }
      rawContent = String(decoding: data, as: UTF8.self)
      if format.isEmpty { format = path.hasSuffix(".md") ? "markdown" : "yaml" }
    }
  }
}

extension MeshConfig.Policy {
  /// Reads the `balancer`, `health`, `outlier_detection` and `retry` sections present in `keys`.
  mutating func read(_ keys: [String: YAMLReader]) throws {
    if let reader = keys["balancer"] {
      let keys = try reader.mapping(keys: ConfigKeys.balancer)
      if let value = keys["policy"] {
        let text = try value.string()
        guard let policy = MeshConfig.Balancer.Policy(rawValue: text) else {
          let known = MeshConfig.Balancer.Policy.allCases.map(\.rawValue).joined(separator: ", ")
          throw value.error("expected one of \(known), got \"\(text)\"")
        }
        balancer.policy = policy
      }
      if let value = keys["max_concurrent_calls"] { balancer.maxConcurrentCalls = try value.int(in: 0...100_000) }
      if let value = keys["max_queued_calls"] { balancer.maxQueuedCalls = try value.int(in: 0...1_000_000) }
    }
    if let reader = keys["health"] {
      let keys = try reader.mapping(keys: ConfigKeys.health)
      if let value = keys["interval"] { health.interval = try value.duration() }
      if let value = keys["timeout"] { health.timeout = try value.duration() }
      if let value = keys["unhealthy_threshold"] { health.unhealthyThreshold = try value.int(in: 1...100) }
      if let value = keys["healthy_threshold"] { health.healthyThreshold = try value.int(in: 1...100) }
      if let value = keys["start_healthy"] { health.startHealthy = try value.bool() }
      if let value = keys["panic_mode"] { health.panicMode = try value.bool() }
    }
    if let reader = keys["outlier_detection"] {
      let keys = try reader.mapping(keys: ConfigKeys.outlierDetection)
      if let value = keys["consecutive_failures"] { outlierDetection.consecutiveFailures = try value.int(in: 1...10_000) }
      if let value = keys["base_ejection_time"] { outlierDetection.baseEjectionTime = try value.duration() }
      if let value = keys["max_ejection_time"] { outlierDetection.maxEjectionTime = try value.duration() }
      if let value = keys["max_ejection_percent"] { outlierDetection.maxEjectionPercent = try value.int(in: 0...100) }
    }
    if let reader = keys["retry"] {
      let keys = try reader.mapping(keys: ConfigKeys.retry)
      if let value = keys["max_attempts"] { retry.maxAttempts = try value.int(in: 1...10) }
      if let value = keys["budget_percent"] { retry.budgetPercent = try value.int(in: 0...100) }
      if let value = keys["min_concurrent_retries"] { retry.minConcurrentRetries = try value.int(in: 0...10_000) }
      if let value = keys["on_unavailable"] { retry.onUnavailable = try value.bool() }
      if let value = keys["replay_started_calls"] { retry.replayStartedCalls = try value.bool() }
      if let value = keys["max_kept_request_bytes"] { retry.maxKeptRequestBytes = try value.int(in: 0...(64 << 20)) }
    }
  }
}

extension MeshConfig.ListenerTLS {
  init(reading reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.listenerTLS)
    guard let cert = keys["cert"], let key = keys["key"] else {
      throw reader.error("a listener's TLS needs both \"cert\" and \"key\" (PEM files)")
    }
    var auth: ClientAuth?
    if let value = keys["client_auth"] {
      let text = try value.string()
      guard let parsed = ClientAuth(rawValue: text) else {
        throw value.error("expected one of \(ClientAuth.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
      }
      auth = parsed
    }
    self.init(
      certificate: try cert.filePath(), privateKey: try key.filePath(), clientCA: try keys["client_ca"]?.filePath(),
      clientAuth: auth, allowedIdentities: try keys["allowed_identities"]?.strings() ?? [])
    if clientAuth != .none && clientCA == nil {
      throw reader.error("client_auth \(clientAuth.rawValue) needs client_ca (the CA bundle client certificates chain to)")
    }
    if !allowedIdentities.isEmpty && clientAuth == .none {
      throw reader.error("allowed_identities needs client certificates: set client_ca")
    }
  }
}

extension MeshConfig.ClientTLS {
  init(reading reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.clientTLS)
    self.init(
      ca: try keys["ca"]?.filePath(), certificate: try keys["cert"]?.filePath(), privateKey: try keys["key"]?.filePath(),
      serverName: try keys["server_name"]?.string(), allowedIdentities: try keys["allowed_identities"]?.strings() ?? [])
    if (certificate == nil) != (privateKey == nil) {
      throw reader.error("a client certificate needs both \"cert\" and \"key\"")
    }
  }
}
