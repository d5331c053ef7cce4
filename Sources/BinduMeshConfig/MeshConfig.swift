import BinduHTTP2

/// Everything bindu-mesh needs to run, with built-in defaults for each part.
///
/// Load it from YAML with ``MeshConfig/load(file:)`` (see `Config/bindu-mesh.yaml` for every key),
/// or start from ``MeshConfig/defaults`` and change what you need:
///
/// ```swift
/// var config = MeshConfig.defaults
/// config.registry.listen = HostPort(host: "127.0.0.1", port: 0)
/// ```
package struct MeshConfig: Sendable, Hashable {
  /// The Bindu core the mesh registers its pools with, and how (the settings apply to every core).
  package var core: Core
  /// Several cores sharing one Redis scheduler and one Postgres storage (Bindu's scale-out):
  /// every pool registers with each. Empty: the one core at `core.address`.
  package var cores: [CoreTarget] = []
  /// The listener replicas register with, as if it were the core.
  package var registry: Registry
  /// Where callback listeners of pools that are not declared in the config listen.
  package var callbacks: Callbacks
  /// How the mesh talks to replicas.
  package var upstream: Upstream
  /// Graceful shutdown.
  package var shutdown: Shutdown
  /// The admin HTTP listener (metrics, health, pool state) and logging.
  package var admin: Admin
  /// Health checks, ejection and retries of every pool not overriding them.
  package var policy: Policy
  /// Pools declared in the config; more are made when replicas of other agents register.
  package var pools: [Pool]
  /// Where the registry is kept across restarts.
  package var state: State = .defaults
  /// Traces over OTLP (off by default).
  package var tracing: Tracing = .defaults

  /// Creates a configuration from its parts.
  package init(
    core: Core = .defaults,
    registry: Registry = .defaults,
    callbacks: Callbacks = .defaults,
    upstream: Upstream = .defaults,
    shutdown: Shutdown = .defaults,
    admin: Admin = .defaults,
    policy: Policy = .defaults,
    pools: [Pool] = []
  ) {
    self.core = core
    self.registry = registry
    self.callbacks = callbacks
    self.upstream = upstream
    self.shutdown = shutdown
    self.admin = admin
    self.policy = policy
    self.pools = pools
  }

  /// All defaults and no declared pool: what `bindu-mesh` runs with no arguments.
  package static var defaults: Self { Self() }

  /// The cores every pool registers with: `cores`, or the one at `core.address`.
  package var coreTargets: [CoreTarget] {
    cores.isEmpty ? [CoreTarget(address: core.address)] : cores
  }
}

extension MeshConfig {
  /// One Bindu core of several (`cores[]` in YAML).
  package struct CoreTarget: Sendable, Hashable {
    /// The core's `BinduService`.
    package var address: HostPort
    /// The agent URL given to this core in place of the config's `deployment.url`: the core
    /// serves A2A on its port, so cores on one host each need their own. `nil`: the config's.
    package var agentURL: String?

    /// A core at `address`.
    package init(address: HostPort, agentURL: String? = nil) {
      self.address = address
      self.agentURL = agentURL
    }
  }
}

extension MeshConfig {
  /// The mesh's registration with the Bindu core (`core:` in YAML).
  package struct Core: Sendable, Hashable {
    /// The core's `BinduService`. Default `127.0.0.1:3774`.
    package var address: HostPort
    /// Time between heartbeats to the core. Default 30 s.
    package var heartbeatInterval: Duration
    /// Deadline of each call to the core. Default 10 s (`RegisterAgent` starts an HTTP server).
    package var callTimeout: Duration
    /// First wait before registering again after a failure. Default 0.5 s, doubled each time.
    package var retryInitialBackoff: Duration
    /// Longest wait between two attempts to reach a core that is down (registrations and
    /// connections); it bounds how long a core that is back waits for the mesh. Default 2 s.
    package var retryMaxBackoff: Duration
    /// TLS to the core (or to another mesh acting as the core); `nil`: plaintext.
    package var tls: ClientTLS? = nil

    /// Default values.
    package static var defaults: Self {
      Self(
        address: HostPort(host: "127.0.0.1", port: 3774),
        heartbeatInterval: .seconds(30),
        callTimeout: .seconds(10),
        retryInitialBackoff: .milliseconds(500),
        retryMaxBackoff: .seconds(2)
      )
    }
  }

  /// The registry listener (`registry:` in YAML).
  package struct Registry: Sendable, Hashable {
    /// Where replicas register. Default `127.0.0.1:3775`.
    package var listen: HostPort
    /// A replica with no heartbeat for this long is evicted. Default 90 s (three missed beats).
    package var replicaTimeout: Duration
    /// How long the first replica of an agent waits for the core to accept the agent. Default 30 s.
    package var coreWait: Duration
    /// Reach a replica that gave a loopback or wildcard callback host from another host at
    /// the address it connected from. Default `true`.
    package var rewriteLoopbackCallbacks: Bool
    /// TLS on the registry listener; `nil`: plaintext.
    package var tls: ListenerTLS? = nil
    /// The registry shared with other meshes in PostgreSQL (`postgres_url`, `mesh_id`,
    /// `postgres_tls`); `nil`: this mesh's state file alone. Default `nil`.
    package var shared: SharedRegistry? = nil

    /// Default values.
    package static var defaults: Self {
      Self(
        listen: HostPort(host: "127.0.0.1", port: 3775),
        replicaTimeout: .seconds(90),
        coreWait: .seconds(30),
        rewriteLoopbackCallbacks: true
      )
    }
  }

  /// Callback listeners of pools made by registration (`callbacks:` in YAML).
  package struct Callbacks: Sendable, Hashable {
    /// Host the listeners bind. Default `127.0.0.1` (the core dials its callbacks in plaintext).
    package var listenHost: String
    /// Port of the first such pool; later ones take the next free ports. Default 3776. 0 picks
    /// any free port for each.
    package var firstPort: Int
    /// The most pools that registration may create. Default 16.
    package var maxPools: Int
    /// Host put in the callback address given to the core. Default: the listen host, or
    /// `127.0.0.1` when that is a wildcard.
    package var advertiseHost: String?
    /// TLS on these pools' callback listeners; `nil`: plaintext.
    package var tls: ListenerTLS? = nil
    /// TLS from these pools to their replicas; `nil`: plaintext.
    package var upstreamTLS: ClientTLS? = nil
    /// Most calls one caller's connection may have open at once (the SETTINGS_MAX_CONCURRENT_STREAMS
    /// the listeners announce); more are refused with REFUSED_STREAM. Default 100.
    package var maxConcurrentStreams = 100
    /// A caller's connection that has not sent its HTTP/2 preface and SETTINGS within this is
    /// closed. Default 10 s.
    package var prefaceTimeout: Duration = .seconds(10)
    /// A caller's connection with no call for this long is closed with GOAWAY (the caller
    /// connects again for its next call); `nil` keeps it. Default 1 h.
    package var idleTimeout: Duration? = .seconds(3600)
    /// A caller's call whose answer has waited this long for stream window the caller does not
    /// grant is reset (CANCEL); a connection whose answers wait this long for connection window
    /// is cut off (GOAWAY `ENHANCE_YOUR_CALM`); `nil`: never. Default 30 s.
    package var stalledWindowTimeout: Duration? = .seconds(30)
    /// The most request bytes one caller's connection may have the mesh hold across its calls
    /// (read, and not yet written to a replica, or waiting for one); past it the mesh stops
    /// giving the connection's flow-control window back until some are written, so the caller
    /// waits. Counted by what the mesh has not given back yet, 64 KiB at a time per stream, so it
    /// must be at least ``leastBufferedBytes``. Default 32 MiB.
    package var maxBufferedBytes = 32 << 20

    /// The least ``maxBufferedBytes`` may be: 64 KiB for each stream (what a stream may keep
    /// not given back once written onwards) and one 1 MiB window.
    package var leastBufferedBytes: Int {
      maxConcurrentStreams * ForwardingWindow.batch + HTTP2Connection.Configuration.meshWindowSize
    }

    /// Default values.
    package static var defaults: Self {
      Self(listenHost: "127.0.0.1", firstPort: 3776, maxPools: 16, advertiseHost: nil)
    }
  }

  /// Calls to replicas (`upstream:` in YAML).
  package struct Upstream: Sendable, Hashable {
    /// How long to wait for a TCP connection to a replica. Default 5 s.
    package var connectTimeout: Duration
    /// Largest gRPC message accepted in either direction. Default 4 MiB, as the core uses.
    package var maxMessageBytes: Int
    /// Most concurrent calls on one connection to a replica (fewer when the replica announces
    /// fewer). Default 1000.
    package var maxConcurrentStreams: Int
    /// Longest wait between reconnect attempts to a replica (from 100 ms, doubled). Default 5 s.
    package var reconnectMaxBackoff: Duration = .seconds(5)
    /// A connection to a replica with no call for this long is closed; `nil` keeps it. Default 5 min.
    package var idleTimeout: Duration? = .seconds(300)
    /// Time between HTTP/2 PINGs on a connection to a replica; `nil` sends none. Default 30 s.
    package var keepaliveInterval: Duration? = .seconds(30)
    /// A PING not answered within this closes the connection. Default 10 s.
    package var keepaliveTimeout: Duration = .seconds(10)
    /// The deadline of a call that carries no `grpc-timeout` (the core always sends one, of
    /// 30 s; other callers may not); `nil`: none. Default 60 s.
    package var defaultCallTimeout: Duration? = .seconds(60)
    /// The largest request header list sent to a replica; one that announces a lower
    /// SETTINGS_MAX_HEADER_LIST_SIZE is held to its own. A call over it ends with
    /// `RESOURCE_EXHAUSTED` and is never sent. Default 8 KiB: what gRPC's C-core servers take
    /// (they announce 16 KiB but refuse lists over 8 KiB).
    package var maxHeaderListSize = 8192

    /// Default values.
    package static var defaults: Self {
      Self(connectTimeout: .seconds(5), maxMessageBytes: 4 * 1024 * 1024, maxConcurrentStreams: 1000)
    }
  }

  /// The admin HTTP listener (`admin:` in YAML).
  package struct Admin: Sendable, Hashable {
    /// Where the status page, `/status`, `/metrics`, `/healthz`, `/readyz` and `/pools` are served.
    /// Default `127.0.0.1:9775`.
    package var listen: HostPort
    /// Log one line per call forwarded (method, status, replica, time). Default `false`.
    package var accessLog: Bool
    /// How often certificate, key and CA files are checked for changes (SIGHUP checks at once).
    /// Default 5 s.
    package var tlsReloadInterval: Duration = .seconds(5)
    /// A file holding the bearer token (16 characters or more) that changes through the admin
    /// listener (draining an endpoint) need; `nil`: changes are refused. Read at each change.
    package var tokenFile: String? = nil

    /// Default values.
    package static var defaults: Self { Self(listen: HostPort(host: "127.0.0.1", port: 9775), accessLog: false) }
  }

  /// What the mesh keeps across its own restarts (`state:` in YAML).
  package struct State: Sendable, Hashable {
    /// The folder of the registry's file (`registry.json`): pools made by registration and every
    /// registered replica. Relative paths start at the working directory; made if missing.
    /// Default `.bindu-mesh`.
    package var dir: String

    /// Default values.
    package static var defaults: Self { Self(dir: ".bindu-mesh") }
  }

  /// Graceful shutdown on SIGTERM / SIGINT (`shutdown:` in YAML).
  package struct Shutdown: Sendable, Hashable {
    /// How long in-flight calls may take to finish before connections are closed. Default 25 s.
    package var gracePeriod: Duration

    /// Default values.
    package static var defaults: Self { Self(gracePeriod: .seconds(25)) }
  }

  /// A pool declared in the config (`pools:` in YAML).
  package struct Pool: Sendable, Hashable {
    /// The agent's name (`name` in its config JSON); replicas with this name join this pool.
    package var agent: String
    /// Where this pool's callback listener binds. Default: the next port of ``Callbacks``.
    package var listen: HostPort?
    /// The agent's config JSON. When set, the mesh registers the agent with the core at start,
    /// without waiting for a replica, and refuses replicas whose config differs.
    package var agentConfigJSON: String?
    /// Skills sent with the agent's registration.
    package var skills: [Skill]
    /// Replicas reached at fixed addresses.
    package var replicas: [HostPort]
    /// A name whose every A/AAAA record is a replica (a Kubernetes headless service), with the
    /// replicas' port; resolved again every ``dnsRefresh``.
    package var dns: HostPort?
    /// Time between two resolutions of ``dns``. Default 5 s.
    package var dnsRefresh: Duration = .seconds(5)
    /// This pool's health checks, ejection and retries; `nil` keeps ``MeshConfig/policy``.
    package var policy: Policy?
    /// TLS on this pool's callback listener; `nil`: plaintext.
    package var listenerTLS: ListenerTLS?
    /// TLS to this pool's replicas; `nil`: plaintext.
    package var upstreamTLS: ClientTLS?

    /// Creates a declared pool.
    package init(
      agent: String,
      listen: HostPort? = nil,
      agentConfigJSON: String? = nil,
      skills: [Skill] = [],
      replicas: [HostPort] = []
    ) {
      self.agent = agent
      self.listen = listen
      self.agentConfigJSON = agentConfigJSON
      self.skills = skills
      self.replicas = replicas
    }
  }

  /// A skill of a declared pool's agent, as `SkillDefinition` in the contract.
  package struct Skill: Sendable, Hashable {
    package var name: String
    package var description: String = ""
    package var tags: [String] = []
    package var inputModes: [String] = []
    package var outputModes: [String] = []
    package var version: String = ""
    package var author: String = ""
    /// Raw content of the skill file (`raw_content`, or read from `file`).
    package var rawContent: String = ""
    /// `yaml` or `markdown`.
    package var format: String = ""

    /// Creates a skill with a name and defaults for the rest.
    package init(name: String) { self.name = name }
  }
}

extension HTTP2Connection.Configuration {
  /// The flow-control window the mesh offers its peers, per stream and per connection (1 MiB).
  @inlinable public static var meshWindowSize: Int { 1 << 20 }
}
