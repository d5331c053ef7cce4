import BinduHTTP2
import BinduMeshConfig
import CoreMetrics
import Logging
import NIOCore
import Synchronization

/// The replicas of one agent, and the one place the data path picks from.
///
/// A pool is named by its agent. Endpoints join from the config (static addresses), from DNS, or
/// from registrations (each with a membership id, kept while it heartbeats or its probes pass:
/// ``MemberLiveness``). Health checks and call outcomes feed each endpoint's
/// ``EndpointHealth``; ``pick(excluding:waiter:)`` is the synchronous
/// choice among the endpoints in rotation (least outstanding calls, or round-robin) that the
/// listener makes for every attempt, paired with ``release(_:)`` when the attempt ends.
package final class ReplicaPool: Sendable {
  /// A call waiting in the pool's queue for a free slot, resumed on its own event loop.
  package struct QueuedCall: Sendable {
    /// Hands the call the endpoint it may now use.
    let resume: @Sendable (Endpoint) -> Void
  }

  /// Result of a replica asking to join.
  package enum JoinResult: Sendable, Equatable {
    /// The replica is in the pool.
    case joined
    /// Its config differs from the pool's; the reason says where.
    case refused(String)
  }

  /// The balancer's answer.
  package enum Pick: Sendable {
    /// Call this endpoint.
    case endpoint(Endpoint)
    /// Every endpoint is at `balancer.max_concurrent_calls`: the call waits under this ticket
    /// until its waiter is resumed, or it leaves the queue (``leaveQueue(_:)``).
    case queued(ticket: UInt64)
    /// The queue is full; the reason names the pool.
    case queueFull(String)
    /// No endpoint may take the call; the reason names the pool and why.
    case none(String)
  }

  /// An endpoint and its health, for logs, tests and the admin view.
  package struct EndpointState: Sendable {
    package let endpoint: Endpoint
    package let health: EndpointHealth
    package let state: String
    /// Whether the balancer may pick it now (in rotation, or everyone in panic mode).
    package let inRotation: Bool
    /// For a registered replica, the signal that last showed it alive.
    package let liveness: MemberLiveness.Signal?
    /// Calls it has now.
    package let callsInFlight: Int
    /// Its calls of the last minute.
    package let recentCalls: CallWindow
  }

  /// The pool's rules, kept under its lock.
  package typealias State = PoolState<Endpoint, QueuedCall>

  /// The agent's name.
  package let name: String
  /// Whether the pool was declared in the config (it keeps its definition when empty).
  package let declared: Bool
  /// Health checks, ejection and retries of this pool (a reload may change them).
  package var policy: MeshConfig.Policy { state.withLock { $0.policy } }
  /// Counts the reloads that changed ``policy``: a caller's connection keeps the retry policy
  /// and reads it again only when this moved (``refreshRetry(_:)``).
  let policyGeneration = Atomic<Int>(0)
  /// The mesh's metrics.
  package let metrics: MeshMetrics
  /// The settings a reload changes (limits of new connections, the access log).
  let settings: LiveSettings
  /// Whether every call forwarded is logged.
  var accessLog: Bool { settings.accessLog }
  package let state: Mutex<State>
  private let registeredCores = Atomic<Int>(0)
  let ejectionsCounter: Counter
  let probesPassed: Counter
  let probesFailed: Counter
  private let queuedGauge: Gauge
  private let queueWait: Timer
  private let callsInFlight = Atomic<Int>(0)
  private let retriesInFlight = Atomic<Int>(0)
  /// Makes the pool's endpoints (their event loops, limits and TLS).
  let endpointFactory: EndpointFactory
  let logger: Logger

  package init(
    name: String,
    declared: Bool,
    definition: AgentDefinition?,
    policy: MeshConfig.Policy,
    loops: [any EventLoop],
    settings: LiveSettings,
    metrics: MeshMetrics,
    security: UpstreamTLSContext?,
    logger: Logger
  ) {
    self.name = name
    self.declared = declared
    self.metrics = metrics
    self.ejectionsCounter = metrics.counter("ejections_total", [("pool", name)])
    self.probesPassed = metrics.counter("health_probes_total", [("pool", name), ("result", "passed")])
    self.probesFailed = metrics.counter("health_probes_total", [("pool", name), ("result", "failed")])
    self.queuedGauge = metrics.gauge("queued_calls", [("pool", name)])
    // Counters exist at 0 from the start, so that rate() and increase() see their first event.
    for reason in RetryReason.allCases {
      _ = metrics.counter("retries_total", [("pool", name), ("reason", reason.rawValue)])
    }
    self.queueWait = Timer(
      label: "bindu_mesh_queue_wait_seconds", dimensions: [("pool", name)], factory: metrics.factory)
    self.state = Mutex(State(policy: policy, definition: definition))
    self.settings = settings
    self.logger = logger.with("mesh.pool", name)
    self.endpointFactory = EndpointFactory(loops: loops, settings: settings, security: security, logger: self.logger)
  }

  /// The agent definition the pool registers with the core, once known.
  package var definition: AgentDefinition? { state.withLock { $0.definition } }

  /// Every endpoint of the pool, in or out of rotation.
  package var endpoints: [Endpoint] { state.withLock { $0.endpoints } }

  /// Every endpoint with its health.
  package var endpointStates: [EndpointState] {
    let now = ContinuousClock.now
    return state.withLock { state in
      let candidates = state.candidates
      return state.endpoints.map { endpoint in
        let entry = state.entry(endpoint)!
        let liveness = endpoint.membershipID.flatMap { state.members[$0]?.liveness.signal }
        return EndpointState(
          endpoint: endpoint, health: entry.health,
          state: entry.drained ? "draining" : entry.health.stateName(at: now),
          inRotation: candidates.contains { $0 === endpoint }, liveness: liveness, callsInFlight: entry.outstanding,
          recentCalls: entry.recentCalls)
      }
    }
  }

  // MARK: The data path

  /// The endpoint in rotation that the pool's balancer picks, not one in `excluded`; it counts
  /// as outstanding on that endpoint until ``release(_:attempt:)``. When every endpoint is at
  /// `balancer.max_concurrent_calls`, the call is queued and `waiter` resumed later.
  func pick(excluding excluded: [Endpoint] = [], waiter: () -> QueuedCall) -> Pick {
    let (pick, queued) = state.withLock { state -> (Pick, Int?) in
      switch state.pick(excluding: excluded, waiter: waiter, now: .now) {
      case .picked(let endpoint): return (.endpoint(endpoint), nil)
      case .queued(let ticket): return (.queued(ticket: ticket), state.balancer.queuedCount)
      case .queueFull:
        let limit = state.policy.balancer.maxQueuedCalls
        return (.queueFull("pool \"\(name)\": every replica is at its limit and \(limit) calls are queued"), nil)
      case .noEndpoint: return (.none(state.noEndpointReason(pool: name, tried: excluded.count, now: .now)), nil)
      }
    }
    if let queued { queuedGauge.record(queued) }
    return pick
  }

  /// Gives back the call that ``pick(excluding:waiter:)`` counted on `endpoint`, with how its
  /// attempt went when it made one (its figures, and passive health: an endpoint whose calls
  /// keep failing is ejected). Its slot goes to the first queued call that may use it.
  func release(_ endpoint: Endpoint, attempt: State.AttemptEnd? = nil) {
    let now = ContinuousClock.now
    let ejected = withState { $0.release(endpoint, attempt: attempt, now: now) }
    if let ejected { reportEjection(endpoint, ejected, now: now) }
  }

  /// Takes a queued call out of the queue (its deadline passed, its caller left); `false` when
  /// it was already given an endpoint (its waiter is being resumed).
  func leaveQueue(_ ticket: UInt64) -> Bool {
    let now = ContinuousClock.now
    let left = state.withLock { state -> (waited: Duration, count: Int)? in
      state.balancer.cancel(ticket: ticket, now: now).map { ($0.waited, state.balancer.queuedCount) }
    }
    guard let left else { return false }
    queueWait.recordNanoseconds(left.waited.nanoseconds)
    queuedGauge.record(left.count)
    return true
  }

  /// Runs `body` under the pool's lock, then gives the slots it freed (or the endpoints it put
  /// in rotation) to queued calls, resuming them outside the lock.
  @discardableResult
  func withState<Result>(_ body: (inout State) -> Result) -> Result {
    let now = ContinuousClock.now
    let (result, dispatched, queued) = state.withLock { state in
      let result = body(&state)
      return (result, state.dispatch(now: now), state.balancer.queuedCount)
    }
    if !dispatched.isEmpty {
      queuedGauge.record(queued)
      for call in dispatched {
        queueWait.recordNanoseconds(call.waited.nanoseconds)
        call.waiter.resume(call.endpoint)
      }
    }
    return result
  }

  private func reportEjection(_ endpoint: Endpoint, _ ejected: EndpointHealth, now: ContinuousClock.Instant) {
    ejectionsCounter.increment()
    logger.warning(
      "replica ejected: calls keep failing",
      metadata: [
        "mesh.replica": "\(endpoint)", "mesh.ejections": "\(ejected.ejections)",
        "mesh.ejected_for": "\(ejected.ejectedUntil.map { $0 - now } ?? .zero)",
      ])
  }

  /// Server-side metrics of calls to `path` on this pool's listener.
  func serverMetrics(path: String) -> GRPCCallMetrics {
    metrics.server(pool: name, path: path)
  }

  /// Why a call moved to another replica: the `reason` of `bindu_mesh_retries_total`.
  enum RetryReason: String, CaseIterable, Sendable {
    case connectFailed = "connect_failed"
    case refusedStream = "refused_stream"
    case goaway
    case unavailable
    case replay
  }

  /// Counts a retry, by reason.
  func countRetry(reason: RetryReason) {
    metrics.counter("retries_total", [("pool", name), ("reason", reason.rawValue)]).increment()
  }

  /// Calls in flight now.
  package var callsInFlightCount: Int { callsInFlight.load(ordering: .relaxed) }

  /// Calls waiting in the pool's queue.
  package var queuedCallsCount: Int { state.withLock { $0.balancer.queuedCount } }

  /// Whether a core has accepted this pool's agent (and not forgotten it since).
  package var isRegisteredWithCore: Bool { registeredCores.load(ordering: .relaxed) > 0 }

  /// A core accepted the agent (`true`) or forgot or refused it after accepting it (`false`).
  package func coreRegistrationChanged(registered: Bool) {
    if registered {
      registeredCores.add(1, ordering: .relaxed)
    } else {
      registeredCores.subtract(1, ordering: .relaxed)
    }
  }

  /// Why the pool cannot serve the core now, or `nil` when it can: it needs its core
  /// registration (when it has an agent definition) and one endpoint in rotation.
  package var notReadyReason: String? {
    let (hasDefinition, noEndpoint) = state.withLock { state in
      (state.definition != nil, state.rotation.isEmpty ? state.noEndpointReason(pool: name, tried: 0, now: .now) : nil)
    }
    if hasDefinition && !isRegisteredWithCore { return "pool \"\(name)\" is not registered with any core" }
    return noEndpoint
  }

  /// Counts a call in flight for the retry budget; pair with ``endCall()``.
  func beginCall() { callsInFlight.add(1, ordering: .relaxed) }

  /// Ends a call counted by ``beginCall()``.
  func endCall() { callsInFlight.subtract(1, ordering: .relaxed) }

  /// Takes a retry from the budget (`retry.budget_percent` of calls in flight, at least
  /// `retry.min_concurrent_retries`); `false` when it is spent. Pair with ``endRetry()``.
  func beginRetry() -> Bool {
    let retry = policy.retry
    let allowed = max(retry.minConcurrentRetries, callsInFlight.load(ordering: .relaxed) * retry.budgetPercent / 100)
    let (taken, _) = retriesInFlight.add(1, ordering: .relaxed)
    if taken > allowed {
      retriesInFlight.subtract(1, ordering: .relaxed)
      return false
    }
    return true
  }

  /// Returns a retry taken by ``beginRetry()``.
  func endRetry() { retriesInFlight.subtract(1, ordering: .relaxed) }
}
