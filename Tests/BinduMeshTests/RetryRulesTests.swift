import GRPCCore
import NIOCore
import NIOHTTP2
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

/// When a call moves to another replica (``RetryRules``), and the wait between dials to a replica
/// that cannot be reached (``ReconnectBackoff``).
@Suite struct RetryRulesTests {
  static func rules(onUnavailable: Bool = false, replay: Bool = false, maxAttempts: Int = 3) -> RetryRules {
    var policy = MeshConfig.Retry.defaults
    policy.onUnavailable = onUnavailable
    policy.replayStartedCalls = replay
    policy.maxAttempts = maxAttempts
    return RetryRules(policy: policy)
  }

  @Test func unavailableMovesOnlyWhenThePoolSaysSoAndBeforeAnyResponse() {
    let unavailable = Status.Code.unavailable.rawValue
    #expect(Self.rules().moveAfterStatus(unavailable, responseStarted: false) == nil)
    #expect(Self.rules(onUnavailable: true).moveAfterStatus(unavailable, responseStarted: false) == .unavailable)
    #expect(Self.rules(onUnavailable: true).moveAfterStatus(unavailable, responseStarted: true) == nil)
    for other in [Status.Code.ok, .internalError, .resourceExhausted, .deadlineExceeded] {
      #expect(Self.rules(onUnavailable: true).moveAfterStatus(other.rawValue, responseStarted: false) == nil)
    }
    #expect(Self.rules(onUnavailable: true).moveAfterStatus(nil, responseStarted: false) == nil)
  }

  @Test func aRefusedStreamAlwaysMovesAndOtherEndsOnlyWhenReplaysAreAllowed() {
    #expect(Self.rules().moveAfterStreamEnded(reason: .refusedStream, responseStarted: false) == .refusedStream)
    for reason: HTTP2ErrorCode? in [nil, .cancel, .internalError, .noError] {
      #expect(Self.rules().moveAfterStreamEnded(reason: reason, responseStarted: false) == nil)
      #expect(Self.rules(replay: true).moveAfterStreamEnded(reason: reason, responseStarted: false) == .replay)
    }
    // Once the replica has answered, nothing moves: the handler may have run.
    #expect(Self.rules(replay: true).moveAfterStreamEnded(reason: .refusedStream, responseStarted: true) == nil)
    #expect(Self.rules(replay: true).moveAfterStreamEnded(reason: nil, responseStarted: true) == nil)
  }

  @Test func aGoAwayMovesTheCallsTheReplicaNeverBegan() {
    #expect(Self.rules().moveAfterGoAway(responseStarted: false) == .goaway)
    #expect(Self.rules().moveAfterGoAway(responseStarted: true) == nil)
  }

  @Test func attemptsStopAtTheLimit() {
    let rules = Self.rules(maxAttempts: 3)
    #expect(rules.mayTryAnother(after: 1))
    #expect(rules.mayTryAnother(after: 2))
    #expect(!rules.mayTryAnother(after: 3))
    #expect(!Self.rules(maxAttempts: 1).mayTryAnother(after: 1))
  }

  @Test func backoffDoublesUpToItsLimitAndStartsAgainAfterASuccess() {
    var backoff = ReconnectBackoff()
    let limit = TimeAmount.milliseconds(700)
    let waits = (0..<5).map { _ in backoff.failed(limit: limit) }
    #expect(waits == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(700), .milliseconds(700)])
    backoff.reset()
    #expect(backoff.failed(limit: limit) == .milliseconds(100))
    var small = ReconnectBackoff()
    #expect(small.failed(limit: .milliseconds(50)) == .milliseconds(50))
  }
}
