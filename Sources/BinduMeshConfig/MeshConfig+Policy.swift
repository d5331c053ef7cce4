extension MeshConfig {
  /// How a pool spreads calls and keeps them on working replicas: the balancer, health checks,
  /// ejection, retries.
  ///
  /// The top-level `balancer:`, `health:`, `outlier_detection:` and `retry:` sections set it for
  /// every pool; a pool's own sections of the same names override it key by key.
  package struct Policy: Sendable, Hashable {
    /// Active `AgentHandler.HealthCheck` probes.
    package var health: Health
    /// Passive ejection of replicas whose calls fail.
    package var outlierDetection: OutlierDetection
    /// Moving a call to another replica when the first cannot have run it.
    package var retry: Retry
    /// Which replica takes each call.
    package var balancer: Balancer = .defaults

    /// Default values (see each part).
    package static var defaults: Self {
      Self(health: .defaults, outlierDetection: .defaults, retry: .defaults)
    }
  }

  /// How a pool picks a replica for each call (`balancer:` in YAML).
  package struct Balancer: Sendable, Hashable {
    /// A way of picking.
    package enum Policy: String, Sendable, Hashable, CaseIterable {
      /// The replica with the fewest calls outstanding, ties in turn (``LeastRequest``).
      case leastRequest = "least_request"
      /// Each replica in turn (``RoundRobin``).
      case roundRobin = "round_robin"
    }

    /// Default `least_request`: agent handlers are slow and uneven, and several cores call at
    /// once; at one call at a time it picks exactly as round-robin does.
    package var policy: Policy
    /// Most calls one endpoint takes at once; more wait in the pool's queue for the first endpoint
    /// with a free slot, instead of piling onto a busy replica. Default 0: no limit.
    package var maxConcurrentCalls: Int = 0
    /// Most calls waiting in the pool's queue; past it a call is refused with
    /// `RESOURCE_EXHAUSTED`. Default 1000.
    package var maxQueuedCalls: Int = 1000

    /// Default values.
    package static var defaults: Self { Self(policy: .leastRequest) }
  }

  /// Active health checks (`health:` in YAML).
  package struct Health: Sendable, Hashable {
    /// Time between probes of each endpoint. Default 2 s.
    package var interval: Duration
    /// A probe not answered within this fails. Default 1 s.
    package var timeout: Duration
    /// Failed probes in a row that take an endpoint out of rotation. Default 2.
    package var unhealthyThreshold: Int
    /// Passed probes in a row that bring it back. Default 2.
    package var healthyThreshold: Int
    /// Whether a new endpoint takes calls before its first probe passed. Default `false`:
    /// it waits for one passing probe (a registering replica is probed before it is answered).
    package var startHealthy: Bool
    /// With no endpoint in rotation, try every endpoint instead of failing. Default `false`.
    package var panicMode: Bool

    /// Default values.
    package static var defaults: Self {
      Self(
        interval: .seconds(2), timeout: .seconds(1), unhealthyThreshold: 2, healthyThreshold: 2,
        startHealthy: false, panicMode: false)
    }
  }

  /// Passive ejection, after Envoy's outlier detection (`outlier_detection:` in YAML).
  package struct OutlierDetection: Sendable, Hashable {
    /// Failed calls in a row (connection failures, resets, `UNAVAILABLE`, replica timeouts) that
    /// eject an endpoint. Default 5.
    package var consecutiveFailures: Int
    /// Ejection time, multiplied by the number of times the endpoint was ejected. Default 30 s.
    package var baseEjectionTime: Duration
    /// Longest ejection. Default 300 s.
    package var maxEjectionTime: Duration
    /// Most of a pool that may be ejected at once, in percent; one endpoint always may. Default 10.
    package var maxEjectionPercent: Int

    /// Default values.
    package static var defaults: Self {
      Self(consecutiveFailures: 5, baseEjectionTime: .seconds(30), maxEjectionTime: .seconds(300), maxEjectionPercent: 10)
    }
  }

  /// Safe retries (`retry:` in YAML).
  package struct Retry: Sendable, Hashable {
    /// Most attempts per call, the first included. Default 3.
    package var maxAttempts: Int
    /// Retries may be at most this percentage of the pool's calls in flight. Default 20.
    package var budgetPercent: Int
    /// Retries always allowed at once, whatever the budget. Default 3.
    package var minConcurrentRetries: Int
    /// Also retry a call that a replica answered with `UNAVAILABLE` before any response message.
    /// Default `false`: a handler may have run before failing so.
    package var onUnavailable: Bool
    /// Also retry a call whose replica went away after the request was sent (it may have run:
    /// handlers have side effects). Default `false`.
    package var replayStartedCalls: Bool
    /// The most request bytes a call keeps to move to another replica: a larger request is
    /// forwarded as it comes and is no longer retried, and one waiting for its replica is read
    /// no further than this. Default 1 MiB.
    package var maxKeptRequestBytes = 1 << 20

    /// Default values.
    package static var defaults: Self {
      Self(maxAttempts: 3, budgetPercent: 20, minConcurrentRetries: 3, onUnavailable: false, replayStartedCalls: false)
    }
  }
}
