import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

/// An endpoint as the pool's rules see it: an identity, an address, maybe a membership.
final class TestEndpoint: PoolEndpoint {
  let address: HostPort
  let membershipID: String?
  init(_ port: Int, member: String? = nil) {
    address = HostPort(host: "127.0.0.1", port: port)
    membershipID = member
  }
}

/// The pool's rules as a plain value: no sockets, no event loops, the clock passed in.
@Suite struct PoolStateTests {
  typealias State = PoolState<TestEndpoint, Int>
  let now = ContinuousClock.now

  func endpoint(_ port: Int, member: String? = nil) -> TestEndpoint { TestEndpoint(port, member: member) }

  func state(_ configure: (inout MeshConfig.Policy) -> Void = { _ in }) -> State {
    var policy = MeshConfig.Policy.defaults
    configure(&policy)
    return State(policy: policy, definition: nil)
  }

  func waiter() -> Int { 0 }

  func picked(_ decision: State.Balancer.Decision) -> TestEndpoint? {
    if case .picked(let endpoint) = decision { return endpoint }
    return nil
  }

  @Test func endpointsEnterRotationByProbeAndPanicModeTriesThemAll() {
    var pool = state()
    let a = endpoint(1), b = endpoint(2)
    pool.insert(a, now: now)
    pool.insert(b, now: now)
    #expect(pool.rotation.isEmpty && pool.candidates.isEmpty)
    #expect(pool.noEndpointReason(pool: "p", tried: 0, now: now) == "no healthy replica in pool \"p\" (2 replicas: 2 pending)")
    #expect(pool.probe(a, passed: true, message: "ok", now: now) != nil)
    #expect(pool.rotation.map(\.address.port) == [1])
    var panic = state { $0.health.panicMode = true }
    panic.insert(a, now: now)
    panic.insert(b, now: now)
    #expect(panic.candidates.count == 2)
  }

  @Test func noMoreThanTheEjectionLimitIsEjectedAtOnce() {
    var pool = state()  // 5 failures eject; at most 10 % (one endpoint always may be)
    let endpoints = (1...3).map { endpoint($0) }
    for e in endpoints {
      pool.insert(e, now: now)
      _ = pool.probe(e, passed: true, message: "", now: now)
    }
    var ejected: [Int] = []
    for e in endpoints {
      for _ in 0..<5 {
        if pool.callOutcome(e, failed: true, now: now) != nil { ejected.append(e.address.port) }
      }
    }
    #expect(ejected == [1])
    #expect(pool.rotation.map(\.address.port) == [2, 3])
    #expect(pool.expireEjections(now: now + .seconds(31)).map(\.address.port) == [1])
    #expect(pool.rotation.count == 3)
  }

  @Test func queuedCallsAreNeverGivenAnEndpointThatLeft() {
    var pool = state { $0.balancer.maxConcurrentCalls = 1 }
    let a = endpoint(1), c = endpoint(3)
    pool.insert(a, now: now)
    _ = pool.probe(a, passed: true, message: "", now: now)
    let first = picked(pool.pick(excluding: [], waiter: waiter, now: now))
    #expect(first === a)
    guard case .queued = pool.pick(excluding: [], waiter: waiter, now: now) else {
      Issue.record("expected the second call to wait")
      return
    }
    pool.remove([a], now: now)
    #expect(pool.release(a, attempt: nil, now: now) == nil, "a call on an endpoint that left gives nothing back")
    #expect(pool.dispatch(now: now).isEmpty)
    pool.insert(c, now: now)
    _ = pool.probe(c, passed: true, message: "", now: now)
    #expect(pool.dispatch(now: now).map { $0.endpoint.address.port } == [3])
    #expect(pool.entry(c)?.outstanding == 1)
  }

  @Test func membersStayWhileProbesPassAndLeaveWithNeither() {
    var pool = state()
    let kotlin = endpoint(1, member: "k"), silent = endpoint(2, member: "s")
    pool.addMember("k", endpoint: kotlin, now: now)
    pool.addMember("s", endpoint: silent, now: now)
    _ = pool.probe(kotlin, passed: true, message: "", now: now + .seconds(80))
    let found = pool.evict(silentFor: .seconds(60), now: now + .seconds(100))
    #expect(found.evicted.map(\.address.port) == [2])
    #expect(found.keptByProbes.map(\.address.port) == [1])
    #expect(pool.endpoints.map(\.address.port) == [1])
    #expect(pool.removeMember("k", now: now) === kotlin)
    #expect(pool.removeMember("k", now: now) == nil)
    #expect(pool.noEndpointReason(pool: "p", tried: 0, now: now) == "no replica in pool \"p\"")
  }

  @Test func aReplicaRegisteringAgainFromItsAddressReplacesItsEarlierMembership() {
    var pool = state()
    let before = endpoint(7001, member: "old")
    let other = endpoint(7002, member: "other")
    let again = endpoint(7001, member: "new")
    pool.addMember("old", endpoint: before, now: now)
    pool.addMember("other", endpoint: other, now: now)
    pool.addMember("new", endpoint: again, now: now + .seconds(1))
    // The earlier registration, ending after the later one joined, removes nothing.
    #expect(pool.removeMembers(at: again.address, except: "old", now: now).isEmpty)
    let removed = pool.removeMembers(at: again.address, except: "new", now: now)
    #expect(removed.map(\.id) == ["old"])
    #expect(removed.first?.endpoint === before)
    #expect(Set(pool.members.keys) == ["other", "new"])
    #expect(pool.endpoints.count == 2)
  }

  @Test func ipAddressesAreToldFromNames() {
    #expect(HostPort(host: "10.0.0.1", port: 1).isIPv4Address)
    #expect(HostPort(host: "::1", port: 1).isIPAddress)
    #expect(!HostPort(host: "::1", port: 1).isIPv4Address)
    #expect(!HostPort(host: "host-a.internal", port: 1).isIPAddress)
    #expect(!HostPort(host: "1.2.3", port: 1).isIPAddress)
    #expect(!HostPort(host: "300.1.1.1", port: 1).isIPAddress)
    #expect(!HostPort(host: "10.0.0.1.example", port: 1).isIPAddress)
  }

  @Test func aDrainedEndpointLeavesRotationWhateverItsHealthAndComesBackUndrained() {
    var pool = state { $0.health.startHealthy = true }
    let one = endpoint(7101)
    let two = endpoint(7102)
    pool.insert(one, now: now)
    pool.insert(two, now: now)
    #expect(pool.rotation.count == 2)
    #expect(pool.setDrained(true, at: two.address, now: now).map { $0 === two } == [true])
    #expect(pool.rotation.map(\.address) == [one.address])
    #expect(pool.isDrained(two))
    #expect(pool.setDrained(true, at: HostPort(host: "127.0.0.1", port: 1), now: now).isEmpty)
    _ = pool.setDrained(false, at: two.address, now: now)
    #expect(pool.rotation.count == 2)
    _ = pool.setDrained(true, at: two.address, now: now)
    pool.remove([two], now: now)
    pool.insert(two, now: now)
    #expect(!pool.isDrained(two), "a drain ends with the endpoint")
  }

  @Test func anAttemptsEndGivesBackItsLoadAndFeedsTheFiguresAndTheHealth() {
    var pool = state()  // 5 failures in a row eject
    let a = endpoint(1), b = endpoint(2)
    for e in [a, b] {
      pool.insert(e, now: now)
      _ = pool.probe(e, passed: true, message: "", now: now)
    }
    #expect(picked(pool.pick(excluding: [], waiter: waiter, now: now)) === a)
    #expect(pool.entry(a)?.outstanding == 1)
    // Answered OK in 2 ms: the load is back to 0, the call time is known, the call is counted.
    #expect(pool.release(a, attempt: .init(took: .milliseconds(2), ok: true, failed: false), now: now) == nil)
    #expect(pool.entry(a)?.outstanding == 0)
    #expect(pool.entry(a)?.callTimeAverage == 2_000)
    #expect(pool.entry(a)?.recentCalls.summary(at: CallWindow.second(of: now)).calls == 1)
    // A slower answer moves the average by an eighth of the difference; a failure not at all.
    _ = pool.pick(excluding: [b], waiter: waiter, now: now)
    _ = pool.release(a, attempt: .init(took: .milliseconds(10), ok: true, failed: false), now: now)
    #expect(pool.entry(a)?.callTimeAverage == 3_000)
    // Five judged failures in a row eject it (the fifth returns its health); a call the mesh
    // ended itself (not judged) counts for neither.
    var ejected: [EndpointHealth?] = []
    for _ in 0..<5 {
      _ = pool.pick(excluding: [b], waiter: waiter, now: now)
      _ = pool.release(a, attempt: .init(took: .milliseconds(1), ok: false, failed: nil), now: now)
      _ = pool.pick(excluding: [b], waiter: waiter, now: now)
      ejected.append(pool.release(a, attempt: .init(took: .milliseconds(1), ok: false, failed: true), now: now))
    }
    #expect(ejected.dropLast().allSatisfy { $0 == nil })
    #expect(ejected.last??.ejections == 1)
    #expect(pool.entry(a)?.callTimeAverage == 3_000)
    #expect(pool.entry(a)?.outstanding == 0)
    #expect(pool.rotation.map(\.address.port) == [2])
  }

  @Test func leastRequestReadsTheLoadsThePoolKeeps() {
    var pool = state()
    let a = endpoint(1), b = endpoint(2), c = endpoint(3)
    for e in [a, b, c] {
      pool.insert(e, now: now)
      _ = pool.probe(e, passed: true, message: "", now: now)
    }
    // Three calls in flight, one each; the one on b ends: the next call goes to b.
    let first = (0..<3).compactMap { _ in picked(pool.pick(excluding: [], waiter: waiter, now: now)) }
    #expect(first.map(\.address.port) == [1, 2, 3])
    _ = pool.release(b, attempt: nil, now: now)
    #expect(picked(pool.pick(excluding: [], waiter: waiter, now: now)) === b)
  }

  @Test func entriesStayWithTheirEndpointsAsOthersLeave() {
    var entries = EndpointEntries()
    let endpoints = (1...4).map { endpoint($0) }
    let ids = endpoints.map { ObjectIdentifier($0) }
    for (index, id) in ids.prefix(3).enumerated() {
      var entry = EndpointEntry(health: EndpointHealth(policy: .defaults))
      entry.outstanding = index + 1
      entries.insert(id, entry)
    }
    entries.insert(ids[0], EndpointEntry(health: EndpointHealth(policy: .defaults)))  // has one: kept
    entries.remove(ids[0])  // the last takes its slot
    entries.insert(ids[3], { var entry = EndpointEntry(health: EndpointHealth(policy: .defaults)); entry.outstanding = 4; return entry }())
    entries.remove(ids[2])
    #expect(entries[ids[0]] == nil && entries[ids[2]] == nil)
    #expect(entries[ids[1]]?.outstanding == 2 && entries[ids[3]]?.outstanding == 4)
    #expect(entries.values.count == 2)
    entries.remove(ids[2])  // gone already: nothing happens
    #expect(entries.values.map(\.outstanding).sorted() == [2, 4])
  }
}
