import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

@Suite struct EndpointHealthTests {
  let start = ContinuousClock.now

  @Test func newEndpointWaitsForItsFirstProbe() {
    var health = EndpointHealth(policy: .defaults)
    #expect(!health.inRotation(at: start))
    do { let changed = health.probe(passed: true, message: "ok", now: start); #expect(changed) }
    #expect(health.inRotation(at: start))
    var eager = MeshConfig.Policy.defaults
    eager.health.startHealthy = true
    #expect(EndpointHealth(policy: eager).inRotation(at: start))
  }

  @Test func thresholdsMoveInAndOutOfRotation() {
    var health = EndpointHealth(policy: .defaults)  // unhealthy 2, healthy 2
    _ = health.probe(passed: true, message: "", now: start)
    do { let changed = health.probe(passed: false, message: "", now: start); #expect(!changed) }
    do { let changed = health.probe(passed: false, message: "", now: start); #expect(changed) }
    #expect(health.active == .unhealthy)
    do { let changed = health.probe(passed: true, message: "", now: start); #expect(!changed) }
    do { let changed = health.probe(passed: true, message: "", now: start); #expect(changed) }
    #expect(health.active == .healthy)
  }

  @Test func consecutiveCallFailuresEjectForGrowingTimes() {
    var health = EndpointHealth(policy: .defaults)  // 5 failures, 30 s base, 300 s max
    _ = health.probe(passed: true, message: "", now: start)
    for _ in 0..<4 { let changed = health.call(failed: true, now: start, mayEject: true); #expect(!changed) }
    do { let changed = health.call(failed: false, now: start, mayEject: true); #expect(!changed, "a success resets the count") }
    for _ in 0..<4 { _ = health.call(failed: true, now: start, mayEject: true) }
    do { let changed = health.call(failed: true, now: start, mayEject: true); #expect(changed) }
    #expect(health.ejectedUntil == start + .seconds(30))
    #expect(!health.inRotation(at: start + .seconds(29)))
    do { let changed = health.expireEjection(now: start + .seconds(30)); #expect(changed) }
    for _ in 0..<5 { _ = health.call(failed: true, now: start + .seconds(31), mayEject: true) }
    #expect(health.ejectedUntil == start + .seconds(91), "second ejection: 2 × 30 s")
    #expect(health.stateName(at: start + .seconds(40)) == "ejected")
  }

  @Test func ejectionRespectsTheLimitAndAPassingProbeEndsIt() {
    var health = EndpointHealth(policy: .defaults)
    _ = health.probe(passed: true, message: "", now: start)
    for _ in 0..<10 { let changed = health.call(failed: true, now: start, mayEject: false); #expect(!changed) }
    for _ in 0..<5 { _ = health.call(failed: true, now: start, mayEject: true) }
    #expect(health.isEjected(at: start))
    _ = health.probe(passed: true, message: "", now: start + .seconds(1))
    #expect(health.inRotation(at: start + .seconds(1)))
  }
}
