import BinduDataPath
import BinduMeshConfig
import Foundation

/// What the admin listener reports: every pool with its core registrations and endpoints,
/// readiness with reasons, and the state gauges refreshed before each scrape.
struct MeshStatus: Sendable {
  let directory: PoolDirectory
  let registrars: CoreRegistrars
  let metrics: MeshMetrics
  let events: RecentEvents
  /// The registry shared with other meshes, if any.
  let shared: SharedRegistry?
  /// Every certificate in use and when it expires (`nil`: not read yet).
  let certificates: @Sendable () -> [(use: String, notAfter: Date?)]
  /// The process's own figures, set at each scrape.
  let process: ProcessMetrics

  /// Everything at once: pools, readiness, certificates and recent events.
  func report() async -> StatusReport {
    let (ready, reasons, _) = await readiness()
    let now = Date()
    let certificates = certificates().compactMap { use, notAfter in
      notAfter.map { CertificateView(use: use, notAfter: $0, daysLeft: $0.timeIntervalSince(now) / 86_400) }
    }
    return StatusReport(
      version: BinduMeshVersion.current, generatedAt: now, ready: ready, notReady: reasons, pools: await pools(),
      certificates: certificates.sorted { $0.use < $1.use }, sharedRegistry: shared?.status, events: events.newestFirst)
  }

  static let endpointStates = ["healthy", "unhealthy", "pending", "ejected", "draining"]

  func pools() async -> [PoolView] {
    let now = ContinuousClock.now
    let second = CallWindow.second(of: now)
    return await directory.all.sorted { $0.pool.name < $1.pool.name }.map { entry in
      let pool = entry.pool
      let cores = registrars.registrations(forAgent: pool.name).map { registration in
        CoreView(
          core: registration.core.description, registered: registration.phase.isRegistered,
          registrations: registration.registrations, registeredSince: registration.registeredSince,
          did: registration.identity?.did,
          agentURL: registration.identity?.agentURL, lastError: registration.lastError)
      }
      let identity = cores.first { $0.did != nil }
      var warnings: [String] = []
      if let definition = pool.definition, case .unknown(let warning) = registrars.check(definition) {
        warnings.append(warning)
      }
      let reason = pool.notReadyReason
      return PoolView(
        agent: pool.name, declared: pool.declared, callbackListen: entry.listenAddress.description,
        callbackAddress: entry.callbackAddress.description, registeredWithCore: pool.isRegisteredWithCore,
        coreRegistrations: cores.reduce(0) { $0 + $1.registrations }, did: identity?.did,
        agentURL: identity?.agentURL, cores: cores, callsInFlight: pool.callsInFlightCount,
        queuedCalls: pool.queuedCallsCount, ready: reason == nil,
        notReadyReason: reason, warnings: warnings,
        endpoints: pool.endpointStates.map { item in
          let recent = item.recentCalls.summary(at: second)
          return EndpointView(
            address: item.endpoint.address.description, origin: item.endpoint.originName, state: item.state,
            inRotation: item.inRotation, callsInFlight: item.callsInFlight,
            ejections: item.health.ejections,
            lastProbe: item.health.lastProbe.map {
              ProbeView(secondsAgo: (now - $0.at).secondsValue, passed: $0.passed, message: $0.message)
            }, member: item.endpoint.membershipID, liveness: item.liveness?.rawValue,
            lastMinute: CallsView(
              calls: recent.calls, failures: recent.failures, callsPerSecond: recent.callsPerSecond,
              successRate: recent.successRate, p50Seconds: recent.p50, p99Seconds: recent.p99))
        })
    }
  }

  /// Ready when at least one pool registers an agent and every such pool is registered with a
  /// core and has an endpoint in rotation; otherwise the reasons. The notes name cores that do
  /// not (or no longer) know a pool's agent while another does.
  func readiness() async -> (ready: Bool, reasons: [String], notes: [String]) {
    let pools = await directory.all.map(\.pool).filter { $0.definition != nil }
    guard !pools.isEmpty else {
      return (false, ["no agent registered with the core yet: waiting for a replica or a declared pool"], [])
    }
    let reasons = pools.compactMap(\.notReadyReason)
    let notes = pools.flatMap { pool in
      registrars.registrations(forAgent: pool.name).filter { !$0.phase.isRegistered }.map {
        "pool \"\(pool.name)\" is not registered with core \($0.core)\($0.lastError.map { ": \($0)" } ?? "")"
      }
    }
    return (reasons.isEmpty, reasons, notes)
  }

  /// Sets the gauges that describe the mesh now.
  func updateGauges() async {
    process.update()
    for view in await pools() {
      let pool = [("pool", view.agent)]
      for state in Self.endpointStates {
        metrics.gauge("endpoints", pool + [("state", state)]).record(view.endpoints.filter { $0.state == state }.count)
      }
      metrics.gauge("calls_in_flight", pool).record(view.callsInFlight)
      for core in view.cores {
        metrics.gauge("core_registered", pool + [("core", core.core)]).record(core.registered ? 1 : 0)
      }
      metrics.gauge("ready", pool).record(view.ready ? 1 : 0)
    }
  }
}

extension Endpoint {
  /// `configured`, `registered` or `dns`.
  var originName: String {
    switch origin {
    case .configured: "configured"
    case .registered: "registered"
    case .discovered: "dns"
    }
  }
}
