import Foundation

/// What the admin listener reports: every pool with its core registration and endpoints,
/// readiness with reasons, and the state gauges refreshed before each scrape.
struct MeshStatus: Sendable {
  let directory: PoolDirectory
  let registrar: CoreRegistrar
  let metrics: MeshMetrics

  /// One pool, as `/pools` shows it.
  struct PoolView: Codable, Sendable {
    var agent: String
    var declared: Bool
    var callbackListen: String
    var callbackAddress: String
    var registeredWithCore: Bool
    var coreRegistrations: Int
    var did: String?
    var agentURL: String?
    var callsInFlight: Int
    var ready: Bool
    var notReadyReason: String?
    var endpoints: [EndpointView]
  }

  /// One endpoint, as `/pools` shows it.
  struct EndpointView: Codable, Sendable {
    var address: String
    var origin: String
    var state: String
    var ejections: Int
    var lastProbe: Probe?
    /// A registered replica's membership id.
    var member: String?
    /// What last showed a registered replica alive: `joined`, `heartbeat` or `probe`.
    var liveness: String?
  }

  /// The last health probe of an endpoint.
  struct Probe: Codable, Sendable {
    var secondsAgo: Double
    var passed: Bool
    var message: String
  }

  static let endpointStates = ["healthy", "unhealthy", "pending", "ejected"]

  func pools() async -> [PoolView] {
    let now = ContinuousClock.now
    return await directory.all.sorted { $0.pool.name < $1.pool.name }.map { entry in
      let pool = entry.pool
      let registration = registrar.registration(forAgent: pool.name)
      let reason = pool.notReadyReason
      return PoolView(
        agent: pool.name, declared: pool.declared, callbackListen: entry.listenAddress.description,
        callbackAddress: entry.callbackAddress.description, registeredWithCore: pool.isRegisteredWithCore,
        coreRegistrations: registration?.registrations ?? 0, did: registration?.identity?.did,
        agentURL: registration?.identity?.agentURL, callsInFlight: pool.callsInFlightCount, ready: reason == nil,
        notReadyReason: reason,
        endpoints: pool.endpointStates.map { item in
          EndpointView(
            address: item.endpoint.address.description, origin: item.endpoint.originName, state: item.state,
            ejections: item.health.ejections,
            lastProbe: item.health.lastProbe.map {
              Probe(secondsAgo: (now - $0.at).secondsValue, passed: $0.passed, message: $0.message)
            }, member: item.endpoint.membershipID, liveness: item.liveness?.rawValue)
        })
    }
  }

  /// Ready when at least one pool registers an agent and every such pool is registered with
  /// the core and has an endpoint in rotation; otherwise the reasons.
  func readiness() async -> (ready: Bool, reasons: [String]) {
    let pools = await directory.all.map(\.pool).filter { $0.definition != nil }
    guard !pools.isEmpty else { return (false, ["no agent registered with the core yet: waiting for a replica or a declared pool"]) }
    let reasons = pools.compactMap(\.notReadyReason)
    return (reasons.isEmpty, reasons)
  }

  /// Sets the gauges that describe the mesh now.
  func updateGauges() async {
    for view in await pools() {
      let pool = [("pool", view.agent)]
      for state in Self.endpointStates {
        metrics.gauge("endpoints", pool + [("state", state)]).record(view.endpoints.filter { $0.state == state }.count)
      }
      metrics.gauge("calls_in_flight", pool).record(view.callsInFlight)
      metrics.gauge("core_registered", pool).record(view.registeredWithCore ? 1 : 0)
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
