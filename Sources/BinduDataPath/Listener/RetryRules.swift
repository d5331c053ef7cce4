import BinduMeshConfig
import GRPCCore
import NIOHTTP2

/// When a call moves to another replica, and when it may not: the rules ``ProxyCall`` follows,
/// as a value of the pool's retry policy in force when the call began.
///
/// A call moves only when it cannot have reached the handler, or when the pool says so:
/// - the replica's GOAWAY says it never began the call (transparent: no retry budget spent);
/// - the replica refused the stream (REFUSED_STREAM, RFC 9113 §8.7);
/// - with `retry.on_unavailable`, the replica answered `UNAVAILABLE` before any response;
/// - with `retry.replay_started_calls`, the replica's stream ended without a status;
/// and never once the replica has sent its response HEADERS. Each move is another attempt, at
/// most `retry.max_attempts` in all, and only with a request that was kept whole
/// (``KeptRequest/canMove``).
struct RetryRules {
  let policy: MeshConfig.Retry

  /// Whether the call moves after the replica answered `status` with its trailers only.
  func moveAfterStatus(_ status: Int?, responseStarted: Bool) -> ReplicaPool.RetryReason? {
    guard !responseStarted, policy.onUnavailable, status == Status.Code.unavailable.rawValue else { return nil }
    return .unavailable
  }

  /// Whether the call moves after the replica's stream ended without a status (reset with
  /// `reason`, or its connection closed: `nil`).
  func moveAfterStreamEnded(reason: HTTP2ErrorCode?, responseStarted: Bool) -> ReplicaPool.RetryReason? {
    guard !responseStarted else { return nil }
    if reason == .refusedStream { return .refusedStream }
    return policy.replayStartedCalls ? .replay : nil
  }

  /// Whether the call moves after the replica's GOAWAY named a last stream below the call's.
  func moveAfterGoAway(responseStarted: Bool) -> ReplicaPool.RetryReason? {
    responseStarted ? nil : .goaway
  }

  /// Whether a call that has had `tried` attempts may have another (`retry.max_attempts`).
  func mayTryAnother(after tried: Int) -> Bool { tried < policy.maxAttempts }
}
