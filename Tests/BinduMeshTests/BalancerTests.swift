import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

/// A stand-in endpoint whose load the test sets.
private final class Slot {
  let name: String
  var load = 0
  var cost = 0
  init(_ name: String, cost: Int = 0) {
    self.name = name
    self.cost = cost
  }
}

@Suite struct RoundRobinTests {
  @Test func roundRobinSkipsExcludedAndStaysFair() {
    var balancer = RoundRobin()
    var picks: [Int] = []
    for _ in 0..<6 { picks.append(balancer.pick(count: 3) { _ in false }!) }
    #expect(picks == [0, 1, 2, 0, 1, 2])
    #expect(balancer.pick(count: 3) { $0 == 0 } == 1)
    #expect(balancer.pick(count: 3) { _ in true } == nil)
    #expect(balancer.pick(count: 0) { _ in false } == nil)
  }
}

@Suite struct LeastRequestTests {
  @Test func oneCallAtATimeGoesExactlyRoundRobin() {
    var balancer = LeastRequest()
    let picks = (0..<7).map { _ in balancer.pick(count: 3, load: { _ in 0 }, isExcluded: { _ in false })! }
    #expect(picks == [0, 1, 2, 0, 1, 2, 0])
  }

  @Test func theLeastLoadedWinsAndTiesGoInTurn() {
    var balancer = LeastRequest()
    let loads = [3, 1, 1, 5]
    #expect(balancer.pick(count: 4, load: { loads[$0] }, isExcluded: { _ in false }) == 1)
    #expect(balancer.pick(count: 4, load: { loads[$0] }, isExcluded: { _ in false }) == 2)
    #expect(balancer.pick(count: 4, load: { loads[$0] }, isExcluded: { _ in false }) == 1)
  }

  @Test func excludedEntriesAreNeverPicked() {
    var balancer = LeastRequest()
    #expect(balancer.pick(count: 3, load: { [0, 5, 5][$0] }, isExcluded: { $0 == 0 }) == 1)
    #expect(balancer.pick(count: 3, load: { _ in 0 }, isExcluded: { _ in true }) == nil)
    #expect(balancer.pick(count: 0, load: { _ in 0 }, isExcluded: { _ in false }) == nil)
  }

  @Test func largePoolsCompareTwoRandomEntriesAndAvoidTheBusyOnes() {
    var balancer = LeastRequest()
    // 20 entries, all busy but two idle ones: two random choices pick a busy one only when both
    // draws are busy, and then the less busy of the two.
    let loads = (0..<20).map { $0 == 4 || $0 == 13 ? 0 : 10 + $0 }
    var picks = [Int: Int]()
    for _ in 0..<2000 {
      let index = balancer.pick(count: 20, load: { loads[$0] }, isExcluded: { $0 == 7 })!
      #expect(index != 7)
      picks[index, default: 0] += 1
    }
    #expect(picks[4, default: 0] + picks[13, default: 0] > 300)
    #expect(picks[19, default: 0] == 0)  // the busiest never wins a comparison
  }
}

@Suite struct PoolBalancerTests {
  let now = ContinuousClock.now
  private let a = Slot("a"), b = Slot("b"), c = Slot("c")

  private func balancer(_ policy: MeshConfig.Balancer.Policy = .leastRequest, limit: Int = 0, queue: Int = 10)
    -> PoolBalancer<Slot, String>
  {
    var config = MeshConfig.Balancer(policy: policy)
    config.maxConcurrentCalls = limit
    config.maxQueuedCalls = queue
    return PoolBalancer(config: config)
  }

  private func pick(
    _ balancer: inout PoolBalancer<Slot, String>, _ candidates: [Slot], excluding: [Slot] = [], waiter: String
  ) -> PoolBalancer<Slot, String>.Decision {
    balancer.pick(candidates, excluding: excluding, waiter: { waiter }, now: now, load: { $0.load }, take: { $0.load += 1 })
  }

  private func name(_ decision: PoolBalancer<Slot, String>.Decision) -> String {
    switch decision {
    case .picked(let slot): slot.name
    case .queued(let ticket): "queued \(ticket)"
    case .queueFull: "full"
    case .noEndpoint: "none"
    }
  }

  @Test func callsSpreadByOutstandingCountsFromThePick() {
    var pool = balancer()
    // Nothing ends: each pick counts, so the three fill evenly.
    let names = (0..<6).map { name(pick(&pool, [a, b, c], waiter: "w\($0)")) }
    #expect(names == ["a", "b", "c", "a", "b", "c"])
    a.load = 0  // a's calls ended
    #expect(name(pick(&pool, [a, b, c], waiter: "x")) == "a")
  }

  @Test func outstandingCallsAreWeightedByHowLongEachReplicasCallsTake() {
    var pool = balancer()
    let fast1 = Slot("fast1", cost: 100), fast2 = Slot("fast2", cost: 100), slow = Slot("slow", cost: 300)
    func next() -> String {
      name(pool.pick([fast1, fast2, slow], excluding: [], waiter: { "w" }, now: now, load: { $0.load }, cost: { $0.cost },
                     take: { $0.load += 1 }))
    }
    // Nothing outstanding: each in turn, whatever the weights.
    #expect([next(), next(), next()] == ["fast1", "fast2", "slow"])
    // slow (1 x 300) now costs more than a fast one with two calls (2 x 100).
    #expect([next(), next(), next(), next()] == ["fast1", "fast2", "fast1", "fast2"])
    // 3 x 100 = 300 ties with slow's 1 x 300: in turn from the last pick.
    #expect(next() == "slow")
    // A replica not measured yet counts as the average of the others.
    let new = Slot("new")
    let picks = (0..<3).map { _ in
      name(pool.pick([fast1, new], excluding: [], waiter: { "w" }, now: now, load: { $0.load }, cost: { $0.cost },
                     take: { $0.load += 1 }))
    }
    #expect(picks == ["new", "new", "new"])  // 0, 1 and 2 calls x 100 stay below fast1's 3 x 100
    #expect(new.load == 3)
  }

  @Test func withALimitACallWaitsForAFastReplicaRatherThanRunOnAMuchSlowerOne() {
    var pool = balancer(limit: 2)
    let fast = Slot("fast", cost: 100), slow = Slot("slow", cost: 300)
    func next(_ waiter: String) -> String {
      name(pool.pick([fast, slow], excluding: [], waiter: { waiter }, now: now, load: { $0.load }, cost: { $0.cost },
                     take: { $0.load += 1 }))
    }
    // In turn from nothing outstanding (no replica is full yet), then by weight.
    #expect([next("1"), next("2"), next("3")] == ["fast", "slow", "fast"])
    // fast is full: waiting for one of its 2 slots (100 x 1/2) and running there (100) is
    // sooner than running on slow (300), so the call waits...
    #expect(next("4") == "queued 1")
    // ... and so do the calls behind it, until waiting for fast takes as long as running on
    // slow: with 3 calls ahead, 100 + 100 x 4/2 = 300, so that call takes slow's free slot.
    #expect([next("5"), next("6"), next("7")] == ["queued 2", "queued 3", "slow"])
    // Both full now: the next call waits.
    #expect(next("8") == "queued 4")
    fast.load -= 1
    let given = pool.dispatch([fast, slow], now: now, load: { $0.load }, cost: { $0.cost }, take: { $0.load += 1 })
    #expect(given.map { "\($0.waiter)->\($0.endpoint.name)" } == ["4->fast"])
  }

  @Test func roundRobinIgnoresLoad() {
    var pool = balancer(.roundRobin)
    a.load = 50
    #expect([0, 1, 2].map { _ in name(pick(&pool, [a, b, c], waiter: "w")) } == ["a", "b", "c"])
  }

  @Test func triedEndpointsAreExcluded() {
    var pool = balancer()
    #expect(name(pick(&pool, [a, b], excluding: [a], waiter: "w")) == "b")
    #expect(name(pick(&pool, [a, b], excluding: [a, b], waiter: "w")) == "none")
    #expect(name(pick(&pool, [], waiter: "w")) == "none")
  }

  @Test func aFullPoolQueuesInOrderAndFreedSlotsGoFirstComeFirstServed() {
    var pool = balancer(limit: 1, queue: 2)
    #expect(name(pick(&pool, [a, b], waiter: "1")) == "a")
    #expect(name(pick(&pool, [a, b], waiter: "2")) == "b")
    #expect(name(pick(&pool, [a, b], waiter: "3")) == "queued 1")
    #expect(name(pick(&pool, [a, b], waiter: "4")) == "queued 2")
    #expect(name(pick(&pool, [a, b], waiter: "5")) == "full")
    #expect(pool.queuedCount == 2)
    b.load -= 1  // b's call ended
    let later = now + .milliseconds(250)
    let given = pool.dispatch([a, b], now: later, load: { $0.load }, take: { $0.load += 1 })
    #expect(given.map { "\($0.waiter)->\($0.endpoint.name)" } == ["3->b"])
    #expect(given.first?.waited == .milliseconds(250))
    #expect(b.load == 1 && pool.queuedCount == 1)
  }

  @Test func aQueuedCallLeavesAtItsDeadlineAndIsNotGivenASlotAfter() {
    var pool = balancer(limit: 1)
    _ = pick(&pool, [a], waiter: "1")
    guard case .queued(let ticket) = pick(&pool, [a], waiter: "2") else {
      Issue.record("expected the call to queue")
      return
    }
    #expect(pool.cancel(ticket: ticket, now: now + .seconds(2))?.waited == .seconds(2))
    #expect(pool.cancel(ticket: ticket, now: now) == nil)
    a.load = 0
    #expect(pool.dispatch([a], now: now, load: { $0.load }, take: { $0.load += 1 }).isEmpty)
  }

  @Test func aQueuedRetryIsNotGivenTheEndpointItFailedOnAndDoesNotBlockOthers() {
    var pool = balancer(limit: 1)
    _ = pick(&pool, [a, b], waiter: "1")
    _ = pick(&pool, [a, b], waiter: "2")
    _ = pick(&pool, [a, b], excluding: [a], waiter: "retry")  // queued, may not use a
    _ = pick(&pool, [a, b], waiter: "new")  // queued after it
    a.load = 0
    let given = pool.dispatch([a, b], now: now, load: { $0.load }, take: { $0.load += 1 })
    #expect(given.map { "\($0.waiter)->\($0.endpoint.name)" } == ["new->a"])
    b.load = 0
    let next = pool.dispatch([a, b], now: now, load: { $0.load }, take: { $0.load += 1 })
    #expect(next.map { "\($0.waiter)->\($0.endpoint.name)" } == ["retry->b"])
  }

  @Test func endpointsThatLeaveAreNotGivenToWaitingCalls() {
    var pool = balancer(limit: 1)
    _ = pick(&pool, [a], waiter: "1")
    _ = pick(&pool, [a], waiter: "2")  // queued
    // a leaves the rotation (ejected, evicted) and c joins.
    let given = pool.dispatch([c], now: now, load: { $0.load }, take: { $0.load += 1 })
    #expect(given.map { "\($0.waiter)->\($0.endpoint.name)" } == ["2->c"])
  }

  @Test func withoutALimitNothingQueues() {
    var pool = balancer(limit: 0)
    a.load = 1000
    #expect(name(pick(&pool, [a], waiter: "w")) == "a")
    #expect(pool.queuedCount == 0)
  }
}

@Suite struct SharedBackingTests {
  let shared = #"{"name":"a","storage":{"type":"postgres","postgres_url":"postgresql+asyncpg://u@h/db"},"scheduler":{"type":"redis","redis_url":"redis://h:6379/0"}}"#

  @Test func oneCoreNeedsNothing() {
    #expect(SharedBacking.check(configJSON: #"{"name":"a","storage":{"type":"memory"}}"#, cores: 1) == .shared)
  }

  @Test func redisAndPostgresAreShared() {
    #expect(SharedBacking.check(configJSON: shared, cores: 3) == .shared)
  }

  @Test func inMemoryStorageOrSchedulerIsRefusedWithTheReason() {
    let cases = [
      (#"{"name":"a","storage":{"type":"memory"}}"#, "storage type \"memory\""),
      (#"{"name":"a","storage":{"type":"postgres"}}"#, "without \"postgres_url\""),
      (#"{"name":"a","storage":{"type":"postgresql","postgres_url":"x"}}"#, "storage type \"postgresql\""),
      (#"{"name":"a","storage":{"type":"postgres","postgres_url":"x"},"scheduler":{"type":"memory"}}"#, "scheduler type \"memory\""),
    ]
    for (json, expected) in cases {
      guard case .refused(let reason) = SharedBacking.check(configJSON: json, cores: 2) else {
        Issue.record("\(json) was not refused")
        continue
      }
      #expect(reason.contains(expected), "\(reason)")
      #expect(reason.contains("2 cores"))
    }
  }

  @Test func aConfigThatNamesNeitherIsAllowedWithAWarning() {
    guard case .unknown(let warning) = SharedBacking.check(configJSON: #"{"name":"a"}"#, cores: 2) else {
      Issue.record("expected a warning")
      return
    }
    #expect(warning.contains("no storage") && warning.contains("STORAGE_TYPE"))
  }
}
