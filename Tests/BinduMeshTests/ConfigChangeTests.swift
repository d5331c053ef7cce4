import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

/// What a reload changes, computed from two configs without a running mesh.
@Suite struct ConfigChangeTests {
  func config(_ yaml: String) throws -> MeshConfig { try MeshConfig(yaml: yaml, source: "test.yaml") }

  let base = """
    upstream:
      default_call_timeout: 60s
    pools:
      - agent: a
        listen: 127.0.0.1:4001
        replicas: [127.0.0.1:5001, 127.0.0.1:5002]
      - agent: b
        listen: 127.0.0.1:4002
        dns: replicas.local:5000
    """

  @Test func theSameFileChangesNothing() throws {
    let change = ConfigChange(from: try config(base), to: try config(base))
    #expect(change.isEmpty)
    #expect(change.summary == "nothing changed")
  }

  @Test func poolsAddedRemovedAndChangedAreNamed() throws {
    let new = try config(
      """
      upstream:
        default_call_timeout: 5s
      retry:
        max_attempts: 2
      pools:
        - agent: a
          listen: 127.0.0.1:4011
          replicas: [127.0.0.1:5001, 127.0.0.1:5003]
          health:
            interval: 1s
        - agent: c
          replicas: [127.0.0.1:5009]
      """)
    let change = ConfigChange(from: try config(base), to: new)
    #expect(change.addedPools == ["c"])
    #expect(change.removedPools == ["b"])
    #expect(
      change.changedPools["a"]
        == ConfigChange.PoolChange(
          replicas: true, dns: false, policy: true, listener: true, listenerTLS: false, upstreamTLS: false))
    #expect(change.policy)
    #expect(change.settings)
    #expect(change.needsRestart.isEmpty)
  }

  @Test func theGlobalPolicyChangesPoolsWithoutTheirOwn() throws {
    let new = try config(base + "\nhealth:\n  interval: 3s\n")
    let change = ConfigChange(from: try config(base), to: new)
    #expect(change.changedPools["a"]?.policy == true)
    #expect(change.changedPools["b"]?.policy == true)
  }

  @Test func keysOnlyANewProcessTakesAreListedAndKeptInForce() throws {
    let old = try config(base)
    let new = try config(
      """
      registry:
        listen: 127.0.0.1:9999
      admin:
        listen: 127.0.0.1:9998
      pools:
        - agent: a
          listen: 127.0.0.1:4001
          replicas: [127.0.0.1:5001, 127.0.0.1:5002]
          upstream_tls:
            ca: ca.pem
        - agent: b
          listen: 127.0.0.1:4002
          dns: replicas.local:5000
          listener_tls:
            cert: cert.pem
            key: key.pem
      """)
    let change = ConfigChange(from: old, to: new)
    #expect(change.needsRestart.contains("registry"))
    #expect(change.needsRestart.contains("admin.listen"))
    #expect(change.changedPools["a"]?.upstreamTLS == true)
    #expect(change.summary.contains("left for the next start"))
    // A listener's TLS is applied to the connections it accepts from then on.
    #expect(change.changedPools["b"]?.listenerTLS == true)
    #expect(!change.needsRestart.contains { $0.contains("listener_tls") })
    let inForce = ConfigChange.inForce(old: old, new: new)
    #expect(inForce.registry.listen == old.registry.listen)
    #expect(inForce.admin.listen == old.admin.listen)
    #expect(inForce.pools[0].upstreamTLS != nil)
    // The upstream settings are in force at once.
    #expect(inForce.upstream == new.upstream)
  }
}

/// A reloaded policy changes the pool's rules for what comes next and keeps its state.
@Suite struct PolicyReloadTests {
  func endpoint(_ port: Int) -> TestEndpoint { TestEndpoint(port) }

  @Test func thresholdsChangeAndHealthStays() {
    let now = ContinuousClock.now
    var policy = MeshConfig.Policy.defaults
    policy.outlierDetection.consecutiveFailures = 5
    var state = PoolState<TestEndpoint, Int>(policy: policy, definition: nil)
    let a = endpoint(1)
    let b = endpoint(2)
    state.insert(a, now: now)
    state.insert(b, now: now)
    _ = state.probe(a, passed: true, message: "ok", now: now)
    _ = state.probe(b, passed: true, message: "ok", now: now)
    #expect(state.rotation.count == 2)
    // Two failures: not enough under the policy in force.
    for _ in 0..<2 { _ = state.callOutcome(a, failed: true, now: now) }
    #expect(state.rotation.count == 2)
    var reloaded = policy
    reloaded.outlierDetection.consecutiveFailures = 3
    reloaded.balancer.maxQueuedCalls = 7
    state.apply(reloaded, now: now)
    #expect(state.policy == reloaded)
    #expect(state.balancer.config.maxQueuedCalls == 7)
    #expect(state.rotation.count == 2, "health is kept across the reload")
    // The third failure in a row now ejects: the count kept, the new threshold applies.
    _ = state.callOutcome(a, failed: true, now: now)
    #expect(state.rotation.map(\.address.port) == [2])
  }
}
