import BinduMeshConfig

/// What the mesh knows of one endpoint's health: active probe results and passive ejection.
///
/// A plain state machine, driven by ``probe(passed:message:now:)`` and ``call(failed:now:mayEject:)``;
/// ``inRotation(at:)`` says whether the balancer may pick the endpoint.
package struct EndpointHealth: Sendable, Hashable {
  /// The result of active probes.
  package enum Active: String, Sendable, Hashable {
    /// No probe has passed yet.
    case pending
    /// Probes pass.
    case healthy
    /// Probes fail.
    case unhealthy
  }

  /// Active probing state.
  package private(set) var active: Active
  /// Until when the endpoint is ejected for failing calls.
  package private(set) var ejectedUntil: ContinuousClock.Instant?
  /// How many times it was ejected.
  package private(set) var ejections = 0
  /// The last probe: when, whether it passed, and what the replica said (or the error).
  package private(set) var lastProbe: (at: ContinuousClock.Instant, passed: Bool, message: String)?
  private var probeSuccesses = 0
  private var probeFailures = 0
  private var callFailures = 0
  private var health: MeshConfig.Health
  private var outlier: MeshConfig.OutlierDetection

  /// A new endpoint: `pending`, or `healthy` when `health.startHealthy`.
  package init(policy: MeshConfig.Policy) {
    self.health = policy.health
    self.outlier = policy.outlierDetection
    self.active = policy.health.startHealthy ? .healthy : .pending
  }

  /// Takes a reloaded policy's thresholds and ejection times; the state, counts and a running
  /// ejection stay as they are.
  package mutating func apply(_ policy: MeshConfig.Policy) {
    health = policy.health
    outlier = policy.outlierDetection
  }

  package static func == (lhs: Self, rhs: Self) -> Bool {
    lhs.active == rhs.active && lhs.ejectedUntil == rhs.ejectedUntil && lhs.ejections == rhs.ejections
  }

  package func hash(into hasher: inout Hasher) {
    hasher.combine(active)
    hasher.combine(ejections)
  }

  /// Whether the balancer may pick the endpoint at `now`.
  package func inRotation(at now: ContinuousClock.Instant) -> Bool {
    active == .healthy && !isEjected(at: now)
  }

  /// Whether a call failed since the last success (or ejection): a success then resets the count.
  package var hasRecentFailures: Bool { callFailures > 0 }

  /// Whether it is ejected at `now`.
  package func isEjected(at now: ContinuousClock.Instant) -> Bool {
    ejectedUntil.map { now < $0 } ?? false
  }

  /// Records a probe; returns `true` when the endpoint entered or left rotation.
  package mutating func probe(passed: Bool, message: String, now: ContinuousClock.Instant) -> Bool {
    let before = inRotation(at: now)
    lastProbe = (now, passed, message)
    if passed {
      probeFailures = 0
      probeSuccesses += 1
      if active == .pending || (active == .unhealthy && probeSuccesses >= health.healthyThreshold) {
        active = .healthy
      }
      // A passing active check ends an ejection (Envoy's successful_active_health_check_uneject_host).
      if active == .healthy { ejectedUntil = nil }
    } else {
      probeSuccesses = 0
      probeFailures += 1
      if active != .unhealthy && probeFailures >= health.unhealthyThreshold { active = .unhealthy }
    }
    return before != inRotation(at: now)
  }

  /// Records the outcome of a call; returns `true` when this failure ejected the endpoint.
  ///
  /// - Parameter mayEject: whether the pool's `max_ejection_percent` leaves room for one more.
  package mutating func call(failed: Bool, now: ContinuousClock.Instant, mayEject: Bool) -> Bool {
    guard failed else {
      callFailures = 0
      return false
    }
    callFailures += 1
    guard callFailures >= outlier.consecutiveFailures, !isEjected(at: now), mayEject else { return false }
    ejections += 1
    callFailures = 0
    let time = min(outlier.baseEjectionTime * ejections, outlier.maxEjectionTime)
    ejectedUntil = now + time
    return true
  }

  /// Ends an ejection whose time is up; returns `true` when it did.
  package mutating func expireEjection(now: ContinuousClock.Instant) -> Bool {
    guard let until = ejectedUntil, now >= until else { return false }
    ejectedUntil = nil
    return true
  }

  /// `healthy`, `unhealthy`, `pending` or `ejected`, for logs and the admin view.
  package func stateName(at now: ContinuousClock.Instant) -> String {
    isEjected(at: now) ? "ejected" : active.rawValue
  }
}
