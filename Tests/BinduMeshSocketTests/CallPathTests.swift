import GRPCCore
import Testing

@testable import BinduMesh

/// One call's path through a whole mesh over real sockets, from a core's side: which replica
/// takes it, what moves it to another, what comes back when none can answer. The replicas are
/// grpc-swift servers in this process (``TestReplica``); the tests with real replica processes
/// killed, stopped or unhealthy are in Tests/e2e/test_faults.py.
@Suite struct CallPathTests {
  @Test func sequentialCallsGoToEachReplicaInTurn() async throws {
    try await StaticPool.run(TestReplica.named(3)) { pool in
      var answeredBy: [String: Int] = [:]
      for index in 0..<9 { answeredBy[StaticPool.replica(of: try await pool.ask("m\(index)")), default: 0] += 1 }
      #expect(answeredBy == ["r1": 3, "r2": 3, "r3": 3])
      #expect(pool.replicas.map(\.calls) == [3, 3, 3])
    }
  }

  @Test func anInternalErrorIsReturnedAsIsAndNotRetried() async throws {
    try await StaticPool.run(TestReplica.named(3)) { pool in
      let failure = try await pool.failure(of: "fail:boom")
      #expect(failure.code == .internalError)
      #expect(failure.message == "boom")
      #expect(pool.replicas.map(\.calls).reduce(0, +) == 1, "a call that may have run is never replayed")
    }
  }

  @Test func unavailableFromAReplicaIsReturnedUnlessRetryOnUnavailableIsSet() async throws {
    // r1 fails every call UNAVAILABLE. By default that is the caller's answer (a handler may have
    // run before failing so); with retry.on_unavailable the call moves on to another replica.
    let replicas = [TestReplica(name: "r1", failing: .unavailable), TestReplica(name: "r2")]
    try await StaticPool.run(replicas) { pool in
      var codes: [RPCError.Code?] = []
      for index in 0..<4 {
        do { _ = try await pool.ask("d\(index)"); codes.append(nil) } catch let error as RPCError { codes.append(error.code) }
      }
      #expect(codes.filter { $0 == .unavailable }.count == 2 && codes.filter { $0 == nil }.count == 2, "\(codes)")
    }
    let retried = [TestReplica(name: "r1", failing: .unavailable), TestReplica(name: "r2")]
    try await StaticPool.run(retried, configure: { $0.policy.retry.onUnavailable = true }) { pool in
      for index in 0..<4 {
        let answer = try await pool.ask("e\(index)")
        #expect(StaticPool.replica(of: answer) == "r2")
      }
      #expect(pool.replicas[0].calls >= 1, "r1 was tried, and the calls it failed moved on")
    }
  }

  @Test func aRefusedConnectionMovesTheCallToAnotherReplica() async throws {
    // Probes are slow here, so it is the call that finds r1's port closed, not a health check.
    try await StaticPool.run(TestReplica.named(3), configure: { $0.policy.health.interval = .seconds(60) }) { pool in
      pool.replicas[0].stop()
      try await eventually { (try? await pool.ask("probe")) != nil && pool.replicas[0].calls == 0 }
      for index in 0..<6 {
        let answer = try await pool.ask("c\(index)")
        #expect(StaticPool.replica(of: answer) != "r1")
      }
    }
  }

  @Test func allReplicasDownFailsUnavailableNamingThePool() async throws {
    try await StaticPool.run(TestReplica.named(2), configure: { $0.policy.health.interval = .milliseconds(100) }) { pool in
      pool.replicas.forEach { $0.stop() }
      try await eventually { await pool.inRotation() == 0 }
      let failure = try await pool.failure(of: "anyone?", timeout: .seconds(5))
      #expect(failure.code == .unavailable)
      #expect(failure.message.contains("pool \"\(StaticPool.agent)\""), "\(failure.message)")
    }
  }

  @Test func aCallPastItsDeadlineEndsDeadlineExceededAndTheReplicaStaysInRotation() async throws {
    try await StaticPool.run(TestReplica.named(2)) { pool in
      let failure = try await pool.failure(of: "sleep:1500 slow", timeout: .milliseconds(300))
      #expect(failure.code == .deadlineExceeded)
      // A call past its deadline counts as one failure of its replica: not enough to eject it
      // (outlier_detection.consecutive_failures).
      #expect(await pool.inRotation() == 2)
      let answer = try await pool.ask("after")
      #expect(answer.hasSuffix("] after"))
    }
  }
}
