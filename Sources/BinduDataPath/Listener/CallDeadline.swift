import BinduHTTP2
import NIOCore

/// When a call must end, and what follows from it: the caller's `grpc-timeout`, or without one
/// `upstream.default_call_timeout`, so that no call holds a stream (and a replica's) for ever.
///
/// The rule is here, whichever clock checks it: a caller's deadline has a timer of the call's
/// own; a default one is checked by its connection's one-second tick (``CallerStreams``), which
/// costs the call no timer. Tested without sockets.
struct CallDeadline: Equatable, Sendable {
  /// Where the deadline came from.
  enum Origin: Equatable, Sendable {
    /// The caller's `grpc-timeout`.
    case caller
    /// `upstream.default_call_timeout`, for a call that came without one.
    case byDefault
  }

  /// The deadline's `grpc-timeout` was malformed (the value given).
  struct Malformed: Error, Equatable {
    let value: String
  }

  /// When the call must have its answer.
  let at: NIODeadline
  let origin: Origin
  /// How long the call was given.
  let timeout: Duration

  /// The deadline of a call whose request headers carry `grpcTimeout` (`nil`: none), else of
  /// `defaultTimeout`; `nil` when it has neither.
  static func of(grpcTimeout: String?, defaultTimeout: Duration?, now: NIODeadline) throws(Malformed) -> CallDeadline? {
    if let grpcTimeout {
      guard let nanos = GRPCTimeout.parse(Substring(grpcTimeout)) else { throw Malformed(value: grpcTimeout) }
      return CallDeadline(at: now + .nanoseconds(nanos), origin: .caller, timeout: .nanoseconds(nanos))
    }
    guard let defaultTimeout else { return nil }
    return CallDeadline(at: now + defaultTimeout.timeAmount, origin: .byDefault, timeout: defaultTimeout)
  }

  /// Whether the call has a timer of its own for it (a caller's deadline); a default one waits
  /// for its connection's tick (``isPast(_:)``).
  var hasOwnTimer: Bool { origin == .caller }

  /// Whether it has passed at `now`.
  func isPast(_ now: NIODeadline) -> Bool { now >= at }

  /// Whether a replica is told the deadline: a caller's is passed on; a default one is the
  /// mesh's own.
  var isPassedOn: Bool { origin == .caller }

  /// The `grpc-timeout` to send a replica at `now`: the time left, at least 1 ns, when the
  /// deadline ``isPassedOn``; `nil` otherwise.
  func grpcTimeout(at now: NIODeadline) -> String? {
    guard isPassedOn else { return nil }
    return GRPCTimeout.format(nanoseconds: max((at - now).nanoseconds, 1))
  }

  /// Whether a replica that ended the call's stream at `now` gave up at the deadline it was sent
  /// (within 50 ms): the caller's answer is then `DEADLINE_EXCEEDED`, whichever timer fired first.
  func replicaGaveUp(at now: NIODeadline) -> Bool {
    isPassedOn && now + .milliseconds(50) >= at
  }
}
