import BinduMeshConfig

/// A pool's rules for who takes each call: the balancer (least outstanding calls or
/// round-robin), the per-endpoint limit `balancer.max_concurrent_calls`, and a FIFO queue of
/// calls waiting for a free slot (`balancer.max_queued_calls`).
///
/// A plain value, mutated under the pool's lock with the endpoints in rotation, their loads and
/// the clock passed in. It returns what to do (call this endpoint, wait, refuse); the pool and
/// ``ProxyCall`` do the I/O. Generic over the endpoint and the waiter so that it is tested
/// without sockets.
struct PoolBalancer<Candidate: AnyObject, Waiter> {
  /// The pool's settings (changed by a reload: ``apply(_:)``).
  private(set) var config: MeshConfig.Balancer
  private var roundRobin = RoundRobin()
  private var leastRequest = LeastRequest()
  private var queue: [Queued] = []
  private var nextTicket: UInt64 = 0

  /// A call waiting for a slot.
  fileprivate struct Queued {
    var ticket: UInt64
    var waiter: Waiter
    var excluded: [Candidate]
    var since: ContinuousClock.Instant
  }

  /// What to do with a call.
  enum Decision {
    /// Call this endpoint (now counted as outstanding on it).
    case picked(Candidate)
    /// Every endpoint is at its limit: the call waits, under this ticket.
    case queued(ticket: UInt64)
    /// Every endpoint is at its limit and the queue is full.
    case queueFull
    /// No endpoint may take the call at all (none in rotation, or all excluded).
    case noEndpoint
  }

  /// A queued call given an endpoint.
  struct Dispatched {
    var waiter: Waiter
    var endpoint: Candidate
    /// How long it waited.
    var waited: Duration
  }

  init(config: MeshConfig.Balancer) { self.config = config }

  /// Takes reloaded settings for the next picks; calls already queued stay queued.
  mutating func apply(_ config: MeshConfig.Balancer) { self.config = config }

  /// Calls waiting now.
  var queuedCount: Int { queue.count }

  /// Picks an endpoint for a call, or queues `waiter` when each endpoint it may use is at its
  /// limit. `waiter` and `now` are read only to queue (most calls never do).
  /// `take` counts a call on the endpoint picked (before the next pick reads `load`).
  mutating func pick(
    _ candidates: [Candidate], excluding excluded: [Candidate], waiter: () -> Waiter,
    now: @autoclosure () -> ContinuousClock.Instant, load: (Candidate) -> Int, cost: (Candidate) -> Int = { _ in 1 },
    take: (Candidate) -> Void
  ) -> Decision {
    let allowed = candidates.contains { candidate in !excluded.contains { $0 === candidate } }
    guard allowed else { return .noEndpoint }
    // Waiting calls were given every slot they may use (``dispatch``): a free slot left is one
    // they cannot use, so a new call takes it without overtaking them.
    if let picked = choose(candidates, excluded, load, cost, ahead: queue.count) {
      take(picked)
      return .picked(picked)
    }
    guard queue.count < config.maxQueuedCalls else { return .queueFull }
    nextTicket += 1
    queue.append(Queued(ticket: nextTicket, waiter: waiter(), excluded: excluded, since: now()))
    return .queued(ticket: nextTicket)
  }

  /// Gives free slots to waiting calls, first come first served; a call that may use none of
  /// the free endpoints (it failed on them) lets the next one go first.
  mutating func dispatch(
    _ candidates: [Candidate], now: ContinuousClock.Instant, load: (Candidate) -> Int,
    cost: (Candidate) -> Int = { _ in 1 }, take: (Candidate) -> Void
  ) -> [Dispatched] {
    var dispatched: [Dispatched] = []
    var index = 0
    while index < queue.count {
      guard let picked = choose(candidates, queue[index].excluded, load, cost, ahead: index) else {
        index += 1
        continue
      }
      take(picked)
      let queued = queue.remove(at: index)
      dispatched.append(Dispatched(waiter: queued.waiter, endpoint: picked, waited: now - queued.since))
    }
    return dispatched
  }

  /// Takes a call out of the queue (its deadline passed or its caller left); `nil` when it is
  /// not there any more (it was given an endpoint already).
  mutating func cancel(ticket: UInt64, now: ContinuousClock.Instant) -> (waiter: Waiter, waited: Duration)? {
    guard let index = queue.firstIndex(where: { $0.ticket == ticket }) else { return nil }
    let queued = queue.remove(at: index)
    return (queued.waiter, now - queued.since)
  }

  /// The endpoint the policy picks among those with a free slot and not excluded.
  ///
  /// Least request compares each endpoint's outstanding calls times its `cost` (how long its
  /// calls take; 0: not known yet, counted as the average of the known ones), so a replica
  /// three times slower takes about a third as many calls at once; with nothing outstanding
  /// anywhere, each in turn.
  ///
  /// With a limit, a call takes a free slot only where it would finish no later than by waiting
  /// for a slot on the full endpoints: with `ahead` calls queued before it, one of their
  /// `limit x full endpoints` slots comes free for it after about `cost x (ahead + 1) / slots`,
  /// and the call then takes `cost`. So a call waits for a fast replica rather than run on a
  /// much slower free one, unless enough calls are queued before it that waiting would take
  /// longer (those further back in the queue then take the slower slot).
  private mutating func choose(
    _ candidates: [Candidate], _ excluded: [Candidate], _ load: (Candidate) -> Int, _ cost: (Candidate) -> Int,
    ahead: Int
  ) -> Candidate? {
    let limit = config.maxConcurrentCalls
    let isTried = { (candidate: Candidate) in excluded.contains { $0 === candidate } }
    guard config.policy == .leastRequest else {
      let index = roundRobin.pick(count: candidates.count) { index in
        (limit > 0 && load(candidates[index]) >= limit) || isTried(candidates[index])
      }
      return index.map { candidates[$0] }
    }
    var known = 0
    var total = 0
    for candidate in candidates {
      let value = cost(candidate)
      if value > 0 {
        known += 1
        total += value
      }
    }
    let unknown = known > 0 ? total / known : 1
    func weight(_ candidate: Candidate) -> Int {
      let value = cost(candidate)
      return value > 0 ? value : unknown
    }
    // When waiting for a slot on the full endpoints would finish this call.
    var soonestFull = Int.max
    if limit > 0 {
      var fullCount = 0
      var fastestFull = Int.max
      for candidate in candidates where !isTried(candidate) && load(candidate) >= limit {
        fullCount += 1
        fastestFull = min(fastestFull, weight(candidate))
      }
      if fullCount > 0 {
        soonestFull = fastestFull + fastestFull * (ahead + 1) / (limit * fullCount)
      }
    }
    let index = leastRequest.pick(
      count: candidates.count, load: { load(candidates[$0]) * weight(candidates[$0]) },
      isExcluded: { index in
        let candidate = candidates[index]
        if isTried(candidate) { return true }
        guard limit > 0 else { return false }
        return load(candidate) >= limit || weight(candidate) > soonestFull
      })
    return index.map { candidates[$0] }
  }
}

extension PoolBalancer: Sendable where Candidate: Sendable, Waiter: Sendable {}
extension PoolBalancer.Queued: Sendable where Candidate: Sendable, Waiter: Sendable {}
