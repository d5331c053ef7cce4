import ArgumentParser
import BinduMesh
import BinduMeshConfig
import Foundation
import Logging
import ServiceLifecycle

@main
struct BinduMeshCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bindu-mesh",
    abstract: "A local mesh proxy and load balancer for Bindu agents.",
    discussion: """
      bindu-mesh registers with the Bindu core (or several cores) as the agent, lets the agent's \
      replicas register with it as if it were the core, and spreads the core's calls over the \
      healthy replicas, each call to the replica with the fewest calls outstanding. It keeps its \
      registry in state.dir (.bindu-mesh), so a restarted mesh takes its replicas back.

      With no arguments it runs on built-in defaults:
        core (BinduService the mesh registers with)   127.0.0.1:3774
        registry (replicas register here)              127.0.0.1:3775
        callback listener of the first agent pool      127.0.0.1:3776

      Every config key is documented in Config/bindu-mesh.yaml. Flags override the file.
      SIGTERM or SIGINT: stop accepting calls, let calls in flight finish \
      (shutdown.grace_period), unregister from the cores, exit 0. SIGHUP: reload the config file \
      (pools, replicas, policies and timeouts; see docs/operations.md) and the TLS files.
      """,
    version: BinduMeshVersion.current,
    subcommands: [Certs.self, Status.self, EndpointCommand.self]
  )

  @Option(name: .long, help: "A YAML config file (see Config/bindu-mesh.yaml).")
  var config: String?

  @Option(name: .customLong("core-address"), help: "The Bindu core's BinduService, host:port. Overrides core.address.")
  var coreAddress: String?

  @Option(name: .customLong("registry-listen"), help: "Where replicas register, host:port. Overrides registry.listen.")
  var registryListen: String?

  @Option(
    name: .customLong("callback-listen"),
    help: "Host and first port of the callback listeners of pools made by registration, host:port. Overrides callbacks.listen_host and callbacks.first_port."
  )
  var callbackListen: String?

  @Option(
    name: .customLong("state-dir"),
    help: "Folder where the registry is kept across restarts (made if missing). Overrides state.dir.")
  var stateDir: String?

  @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
  var logLevel: Logger.Level = .info

  @Flag(
    name: .customLong("take-over"),
    help: "Take over from the bindu-mesh running with the same state directory on this host: serve its callback listeners' sockets, then it stops (no call lost). Without one running, start as usual.")
  var takeOver = false

  @Flag(help: "Check the configuration (file and flags) and the state file, print a summary and exit: 0 when they can be used.")
  var check = false

  func run() async throws {
    // SIGHUP reloads the config and TLS files: never let its default action end the process,
    // not even while the mesh starts, before the reloader traps it.
    signal(SIGHUP, SIG_IGN)
    var config: MeshConfig
    do {
      config = try ConfigSource(
        file: self.config, coreAddress: coreAddress, registryListen: registryListen, callbackListen: callbackListen,
        stateDir: stateDir
      ).load()
    } catch let error as ConfigError {
      throw ValidationError(error.description)
    }
    if check {
      let state: RegistrySnapshot
      do { state = try RegistryStore(directory: config.state.dir).load() } catch {
        throw ValidationError(error.description)
      }
      print(
        "state OK: \(config.state.dir), \(state.pools.count) pool(s), "
          + "\(state.pools.reduce(0) { $0 + $1.members.count }) registered replica(s)")
      print(
        "configuration OK: core \(config.coreTargets.map(\.address.description).joined(separator: ", ")), registry \(config.registry.listen), admin \(config.admin.listen), "
          + "\(config.pools.count) declared pool(s): \(config.pools.map(\.agent).joined(separator: ", "))")
      return
    }

    let level = logLevel
    LoggingSystem.bootstrap { label in
      var handler = StreamLogHandler.standardError(label: label)
      handler.logLevel = level
      return handler
    }
    let logger = Logger(label: "bindu-mesh")
    logger.info(
      "starting",
      metadata: [
        "mesh.cores": "\(config.coreTargets.map(\.address.description).joined(separator: ", "))", "mesh.registry": "\(config.registry.listen)",
        "mesh.declared_pools": "\(config.pools.count)",
      ])
    let mesh: Mesh
    do {
      let source = ConfigSource(
        file: self.config, coreAddress: coreAddress, registryListen: registryListen, callbackListen: callbackListen,
        stateDir: stateDir)
      let reload: (@Sendable () throws -> MeshConfig)? = self.config == nil ? nil : { @Sendable in try source.load() }
      var takenOver: HandOver.TakenOver?
      if takeOver {
        // The running mesh stops only once this one is ready (HandOver); a state file that
        // cannot be read is found before it is even asked.
        _ = try RegistryStore(directory: config.state.dir).load()
        takenOver = try HandOver.takeOver(stateDir: config.state.dir)
        if let takenOver {
          logger.notice(
            "taking over from the running bindu-mesh",
            metadata: ["mesh.previous_pid": "\(takenOver.pid)", "mesh.listeners": "\(takenOver.count)"])
        } else {
          logger.notice("--take-over: no bindu-mesh runs with this state directory; starting as usual")
        }
      }
      mesh = try await Mesh.make(config: config, logger: logger, reload: reload, takenOver: takenOver)
      if let takenOver { try await mesh.finishTakeOver(takenOver, logger: logger) }
    } catch {
      logger.critical("cannot start", metadata: ["error": "\(error)"])
      throw ExitCode.failure
    }
    let group = ServiceGroup(
      configuration: .init(
        services: mesh.services.map { .init(service: $0) },
        gracefulShutdownSignals: [.sigterm, .sigint],
        cancellationSignals: [],
        logger: logger
      )
    )
    defer { mesh.listening.remove() }
    try await group.run()
    logger.notice("stopped")
  }

  static func hostPort(_ text: String, flag: String) throws -> HostPort {
    guard let value = HostPort(parsing: text) else {
      throw ConfigError(source: flag, key: "", message: "expected host:port, got \"\(text)\"")
    }
    return value
  }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `bindu-mesh certs dev`: development certificates for trying mTLS.
struct Certs: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Make certificates.", subcommands: [Dev.self])

  struct Dev: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Make a development CA and server and client certificates signed by it (PEM).",
      discussion: """
        Writes ca.pem, ca-key.pem (kept and reused when the folder has them), server.pem, \
        server-key.pem, client.pem and client-key.pem. For production, use your own PKI \
        (cert-manager, step-ca, ...).
        """)

    @Option(help: "Folder for the files.") var out = "certs/dev"
    @Option(help: "DNS names and IP addresses of the server certificate, comma-separated.")
    var hosts = "localhost,127.0.0.1,::1"
    @Option(help: "Identities of the client certificate (URIs such as SPIFFE IDs, or DNS names), comma-separated.")
    var clientIdentities = "spiffe://bindu-mesh/dev-client"
    @Option(help: "Validity in days.") var days = 365
    @Flag(help: "Make a new CA even if the folder has one.") var newCA = false

    func run() throws {
      var options = DevCertificates.Options(directory: out)
      options.hosts = hosts.split(separator: ",").map(String.init)
      options.clientIdentities = clientIdentities.split(separator: ",").map(String.init)
      options.days = days
      options.newCA = newCA
      for file in try DevCertificates.make(options) { print("wrote \(file)") }
    }
  }
}

/// Where the config comes from: the file and the command line's overrides.
struct ConfigSource: Sendable {
  var file: String?
  var coreAddress: String?
  var registryListen: String?
  var callbackListen: String?
  var stateDir: String?

  /// The config file (or the defaults) with the command line's overrides: at start, and again
  /// for each reload.
  func load() throws -> MeshConfig {
    var config = try file.map { try MeshConfig.load(file: $0) } ?? .defaults
    if let value = coreAddress {
      guard config.cores.isEmpty else {
        throw ConfigError(source: "--core-address", key: "", message: "the config lists cores: name them there")
      }
      config.core.address = try BinduMeshCommand.hostPort(value, flag: "--core-address")
    }
    if let value = registryListen { config.registry.listen = try BinduMeshCommand.hostPort(value, flag: "--registry-listen") }
    if let value = stateDir {
      guard !value.isEmpty else { throw ConfigError(source: "--state-dir", key: "", message: "expected a folder path") }
      config.state.dir = value
    }
    if let value = callbackListen {
      let address = try BinduMeshCommand.hostPort(value, flag: "--callback-listen")
      config.callbacks.listenHost = address.host
      config.callbacks.firstPort = address.port
    }
    return config
  }

}
