import BinduDataPath
import BinduMeshConfig
import Foundation
import GRPCCore
import GRPCNIOTransportCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// A whole bindu-mesh: pools and their listeners, the registry, the core registrars.
///
/// ``make(config:logger:)`` binds the declared pools' listeners; run ``services`` in one
/// `ServiceGroup` (in that order: it shuts down in reverse, so listeners drain first and the
/// core registration goes last):
///
/// ```swift
/// let mesh = try await Mesh.make(config: .defaults, logger: logger)
/// let group = ServiceGroup(configuration: .init(services: mesh.services,
///   gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
/// try await group.run()
/// ```
package final class Mesh: Sendable {
  /// The configuration in force.
  package let config: MeshConfig
  /// Every pool and its listener.
  package let directory: PoolDirectory
  /// The mesh's registrations with the cores.
  package let registrars: CoreRegistrars
  /// The long-running parts, in start order.
  package let services: [any Service]
  /// Every metric of the mesh.
  package let metrics: MeshMetrics
  /// Reloads the config file (SIGHUP, `POST /reload`).
  package let reloader: ConfigReloader
  /// Where the registry and admin listeners serve (`state.dir/listening.json`).
  package let listening: ListeningAddresses
  private let adminPort: AdminPort
  private let registryTransport: HTTP2ServerTransport.Posix

  private init(
    config: MeshConfig, directory: PoolDirectory, registrars: CoreRegistrars, services: [any Service],
    registryTransport: HTTP2ServerTransport.Posix, metrics: MeshMetrics, reloader: ConfigReloader, adminPort: AdminPort,
    listening: ListeningAddresses
  ) {
    self.listening = listening
    self.metrics = metrics
    self.reloader = reloader
    self.adminPort = adminPort
    self.config = config
    self.directory = directory
    self.registrars = registrars
    self.services = services
    self.registryTransport = registryTransport
  }

  /// Builds a mesh and binds its declared pools; declared pools with a config start registering
  /// with the core once ``services`` run. `reload` reads the config again for a reload (the file
  /// and the command line's overrides); `nil`: the mesh has no file to reload.
  package static func make(
    config: MeshConfig, logger: Logger, resolver: any DNSResolver = SystemDNSResolver(),
    reload: (@Sendable () throws -> MeshConfig)? = nil, takenOver: HandOver.TakenOver? = nil
  ) async throws -> Mesh {
    let group = MultiThreadedEventLoopGroup.singleton
    let events = RecentEvents()
    let logger = events.recording(logger)
    let metrics = MeshMetrics()
    try FileManager.default.createDirectory(atPath: config.state.dir, withIntermediateDirectories: true)
    // One mesh per state directory: a second one would share its file (and its ports).
    if takenOver == nil {
      try HandOver.checkNoneRunning(stateDir: config.state.dir)
      // Said before anything starts, with what holds the port (an SDK's own core, often).
      try await ListenerConflict.checkFree([("registry.listen", config.registry.listen), ("admin.listen", config.admin.listen)])
    }
    let store = RegistryStore(directory: config.state.dir)
    let snapshot = try store.load()
    let dns = DNSDiscovery(resolver: resolver, logger: logger)
    let handedOver = HandedOver()
    let tracer = try MeshTracer.make(config.tracing, metrics: metrics, logger: logger)
    if let tracer { logger.info("tracing: spans go over OTLP", metadata: ["otel.endpoint": "\(tracer.endpoint)"]) }
    let settings = LiveSettings(config, tracer: tracer)
    let listeners = CallbackListenerBinder(
      group: group, settings: settings, firstPort: config.callbacks.firstPort, inherited: takenOver?.sockets ?? [:],
      logger: logger)
    let directory = PoolDirectory(
      config: config, settings: settings, loops: Array(group.makeIterator()), listeners: listeners, store: store,
      metrics: metrics, dns: dns, handedOver: handedOver, logger: logger)
    // What can stop the start is checked before a listener is bound (or taken over).
    let authorization = AdminAuthorization(tokenFile: config.admin.tokenFile)
    try authorization.check()
    let (coreSecurity, coreCertificate) = try GRPCTransportSecurity.core(config.core.tls, logger: logger)
    let registrars = CoreRegistrars(
      config: config, security: coreSecurity, metrics: metrics, handedOver: handedOver, tracer: tracer, logger: logger)
    try await directory.prepareRegistrationTLS()
    var shared: SharedRegistry?
    if let sharedConfig = config.registry.shared {
      try await SharedRegistry.check(sharedConfig, logger: logger)
      shared = SharedRegistry(
        config: sharedConfig, replicaTimeout: config.registry.replicaTimeout, directory: directory, registrars: registrars,
        metrics: metrics, logger: logger)
    }
    let declared = try await directory.startDeclaredPools()
    for entry in declared {
      guard let definition = entry.pool.definition else { continue }
      if case .refused(let reason) = registrars.check(definition) {
        throw MeshError.poolRefused(pool: entry.pool.name, reason: reason)
      }
      _ = registrars.register(entry, definition: definition)
    }
    for (entry, definition) in try await directory.restore(snapshot) {
      if case .refused(let reason) = registrars.check(definition) {
        throw MeshError.poolRefused(pool: entry.pool.name, reason: "\(reason) (kept in \(store.path))")
      }
      _ = registrars.register(entry, definition: definition)
    }
    await directory.closeUnusedInherited()
    if let takenOver {
      // What was in rotation in the previous process takes calls at once: its callers'
      // connections come here as soon as it stops.
      for entry in await directory.all {
        let healthy = Set(takenOver.inRotation.filter { $0.agent == entry.pool.name }.map(\.address))
        for endpoint in entry.pool.endpoints where healthy.contains(endpoint.address.description) {
          entry.pool.observeProbe(endpoint, passed: true, message: "in rotation in the previous process")
        }
      }
    }
    var transportConfig = HTTP2ServerTransport.Posix.Config.defaults
    transportConfig.rpc.maxRequestPayloadSize = config.upstream.maxMessageBytes
    if config.registry.tls != nil {
      // Failed handshakes (plaintext, no certificate, another CA) are logged with the peer, as on
      // the callback listeners; the identities are checked by PeerIdentityInterceptor.
      transportConfig.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          let tls = try sync.handler(type: NIOSSLServerHandler.self)
          try sync.addHandler(PeerIdentityHandler(allowed: [], peerRole: "caller", logger: logger), position: .after(tls))
        }
      }
    }
    let (registrySecurity, registryCertificate) = try GRPCTransportSecurity.registry(config.registry.tls, logger: logger)
    let registryTransport = HTTP2ServerTransport.Posix(
      address: .ipv4orv6(config.registry.listen),
      transportSecurity: registrySecurity,
      config: transportConfig
    )
    let registry = GRPCServer(
      transport: registryTransport,
      services: [
        RegistryService(
          directory: directory, registrars: registrars, config: config.registry, shared: shared, tracer: tracer,
          logger: logger)
      ],
      interceptors: [
        ServerMetricsInterceptor(metrics: metrics),
        PeerIdentityInterceptor(allowed: config.registry.tls?.allowedIdentities ?? [], logger: logger),
      ]
    )
    let tlsReloader = TLSReloader(
      fixed: [coreCertificate, registryCertificate].compactMap { $0 }, materials: await directory.tlsMaterials,
      interval: config.admin.tlsReloadInterval, metrics: metrics, logger: logger)
    let reloader = ConfigReloader(
      source: reload, directory: directory, registrars: registrars, tls: tlsReloader, metrics: metrics, logger: logger)
    let adminPort = AdminPort()
    let listening = ListeningAddresses(stateDir: config.state.dir)
    if takenOver == nil { listening.removeStale() }
    let status = MeshStatus(
      directory: directory, registrars: registrars, metrics: metrics, events: events, shared: shared,
      certificates: { tlsReloader.expiries }, process: ProcessMetrics(metrics: metrics))
    let admin = StoppableService(AdminServer.make(
      status: status, listen: config.admin.listen, authorization: authorization, reloader: reloader, logger: logger,
      onListening: { port in
        adminPort.set(port)
        listening.serving("admin", at: HostPort(host: config.admin.listen.host, port: port), logger: logger)
      }))
    // The tracer's exporter starts first and so stops last: the spans of the drain are sent.
    var services: [any Service] = tracer.map { [$0.service] } ?? []
    services += [tlsReloader, reloader]
    services += registrars.all as [any Service]
    services += [
      ReplicaEvictor(directory: directory, timeout: config.registry.replicaTimeout, shared: shared, logger: logger),
    ]
    if let shared { services.append(shared) }
    services.append(dns)
    services += [
      HealthChecker(directory: directory, logger: logger),
      admin,
      GRPCServerService(server: registry, name: "registry", addresses: listening, logger: logger),
      HandOverService(
        path: HandOver.socketPath(stateDir: config.state.dir), directory: directory, handedOver: handedOver,
        listening: listening,
        closeControlListeners: {
          registry.beginGracefulShutdown()
          admin.stop()
        }, logger: logger),
      CallbackListeners(directory: directory, grace: config.shutdown.gracePeriod, logger: logger),
    ]
    return Mesh(
      config: config, directory: directory, registrars: registrars, services: services,
      registryTransport: registryTransport, metrics: metrics, reloader: reloader, adminPort: adminPort,
      listening: listening)
  }

  /// Ends a take-over: tells the previous process that this one is ready (it then closes its
  /// registry and admin listeners and stops) and waits until their ports are free. Run it
  /// after ``make(config:logger:resolver:reload:takenOver:)`` and before ``services``.
  package func finishTakeOver(_ takenOver: HandOver.TakenOver, logger: Logger) async throws {
    try takenOver.confirm(agents: await directory.all.map(\.pool.name).sorted())
    for address in [config.registry.listen, config.admin.listen] where address.port != 0 {
      try await Self.waitUntilFree(address, from: takenOver.pid, logger: logger)
    }
  }

  /// Waits until the previous process has let `address` go, at most 10 s.
  private static func waitUntilFree(_ address: HostPort, from pid: Int32, logger: Logger) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while !ListeningSocket.isFree(address) {
      guard ContinuousClock.now < deadline else {
        throw MeshError.listenerFailed(
          pool: "(registry or admin)", address: address,
          reason: "still in use 10 s after the hand-over from process \(pid)")
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    logger.debug("free after the hand-over", metadata: ["mesh.listen": "\(address)"])
  }

  /// The admin listener's port, once it is serving.
  package var adminListeningPort: Int {
    get async { await adminPort.value() }
  }

  /// Where the registry listens, once it is serving.
  package var registryAddress: HostPort {
    get async throws {
      HostPort(try await registryTransport.listeningAddress) ?? config.registry.listen
    }
  }
}
