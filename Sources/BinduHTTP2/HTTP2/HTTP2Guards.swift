import NIOCore

/// What one peer may make a connection do before it is cut off with GOAWAY
/// `ENHANCE_YOUR_CALM`: the denial-of-service limits of swift-nio-http2 1.46
/// (`DOSHeuristics`: 200 resets in 30 s, one empty DATA frame in a row; five CONTINUATION frames
/// in a row; `GlitchesMonitor`: 200 stream errors) and a budget of control frames.
///
/// A value, one per connection, fed every frame that counts, with the clock passed in; it
/// answers the limit broken, if any, and ``HTTP2Connection`` ends the connection.
public struct HTTP2Guards {
  /// The limits (defaults no looser than swift-nio-http2's).
  public struct Limits: Sendable, Hashable {
    /// swift-nio-http2's defaults.
    public init() {}

    /// Limits for a peer this side chose and dialled (a proxy's upstream): one that refuses or
    /// resets many streams under load is busy, not hostile, so the flood limits are far looser.
    public static var chosenPeer: Self {
      var limits = Self()
      limits.maxResets = 10_000
      limits.maxEmptyDataInARow = 1_000
      limits.maxControlFrames = 100_000
      limits.maxGlitches = 10_000
      return limits
    }

    /// RST_STREAM frames the peer may send within `resetWindow` (a sliding window): a peer that
    /// opens and resets streams in a loop ("rapid reset") would cost a call per stream.
    public var maxResets = 200
    public var resetWindow = TimeAmount.seconds(30)
    /// Empty DATA frames without END_STREAM in a row (each costs work and carries nothing).
    public var maxEmptyDataInARow = 1
    /// CONTINUATION frames in one header block, zero-length ones included.
    public var maxContinuations = 5
    /// PING, SETTINGS and PRIORITY frames, and WINDOW_UPDATEs that grant window nothing waits
    /// for, the peer may send within `controlWindow`; each PING and SETTINGS costs an answer, and
    /// a peer that never reads them would pile them up.
    public var maxControlFrames = 10_000
    public var controlWindow = TimeAmount.seconds(10)
    /// Streams the peer may get wrong over the connection's life (a malformed request, a header
    /// list over the limit, DATA beyond a stream's window, ...), each answered with RST_STREAM:
    /// swift-nio-http2's `maximumConnectionGlitches`.
    public var maxGlitches = 200
    /// How long frames may wait for window the peer does not grant (it does not read) before the
    /// connection is cut off: what it would pin otherwise stays for good. `nil`: no limit.
    public var stalledWindowTimeout: TimeAmount? = .seconds(30)
  }

  /// A limit broken: the reason logged and counted (`bindu_mesh_http2_goaways_total{reason}`).
  public enum Violation: String, Sendable, CaseIterable {
    case rapidReset = "rapid_reset"
    case emptyData = "empty_data_flood"
    case continuations = "continuation_flood"
    case controlFrames = "control_frame_flood"
    case glitches = "stream_error_flood"
    case stalledWindow = "stalled_window"

    /// What the log and the GOAWAY's reason say.
    public func describe(_ limits: Limits) -> String {
      switch self {
      case .rapidReset: "over \(limits.maxResets) RST_STREAM frames in \(limits.resetWindow)"
      case .emptyData: "over \(limits.maxEmptyDataInARow) empty DATA frames in a row"
      case .continuations: "over \(limits.maxContinuations) CONTINUATION frames in one header block"
      case .controlFrames:
        "over \(limits.maxControlFrames) PING, SETTINGS, PRIORITY or idle WINDOW_UPDATE frames in \(limits.controlWindow)"
      case .glitches: "over \(limits.maxGlitches) streams reset for the peer's errors"
      case .stalledWindow: "frames waited \(limits.stalledWindowTimeout ?? .zero) for connection window the peer did not grant"
      }
    }
  }

  let limits: Limits
  /// When the last `maxResets` RST_STREAM frames came, oldest at `resetNext` once full; made at
  /// the first reset.
  private var resetTimes: [NIODeadline] = []
  private var resetNext = 0
  private var emptyDataInARow = 0
  private var continuations = 0
  private var controlFrames = 0
  private var controlWindowStart: NIODeadline?
  private var glitches = 0
  /// Since when frames have waited for the connection's window with none granted.
  private var stalledSince: NIODeadline?

  init(limits: Limits) { self.limits = limits }

  /// The peer reset a stream.
  mutating func reset(now: NIODeadline) -> Violation? {
    guard limits.maxResets > 0 else { return .rapidReset }
    if resetTimes.count < limits.maxResets {
      resetTimes.append(now)
      return nil
    }
    // Full: the oldest of the last `maxResets` must be outside the window.
    let oldest = resetTimes[resetNext]
    resetTimes[resetNext] = now
    resetNext = (resetNext + 1) % limits.maxResets
    return now - oldest < limits.resetWindow ? .rapidReset : nil
  }

  /// A DATA frame with `length` bytes of payload (padding included).
  mutating func data(length: Int, endStream: Bool) -> Violation? {
    guard length == 0 && !endStream else {
      emptyDataInARow = 0
      return nil
    }
    emptyDataInARow += 1
    return emptyDataInARow > limits.maxEmptyDataInARow ? .emptyData : nil
  }

  /// A header block began (HEADERS without END_HEADERS).
  mutating func headerBlockStarted() { continuations = 0 }

  /// A CONTINUATION frame of the header block being read.
  mutating func continuation() -> Violation? {
    continuations += 1
    return continuations > limits.maxContinuations ? .continuations : nil
  }

  /// A PING, SETTINGS or PRIORITY frame, or a WINDOW_UPDATE while nothing waits for window.
  mutating func control(now: NIODeadline) -> Violation? {
    if let start = controlWindowStart, now - start < limits.controlWindow {
      controlFrames += 1
    } else {
      controlWindowStart = now
      controlFrames = 1
    }
    return controlFrames > limits.maxControlFrames ? .controlFrames : nil
  }

  /// A stream reset for the peer's error.
  mutating func glitch() -> Violation? {
    glitches += 1
    return glitches > limits.maxGlitches ? .glitches : nil
  }

  /// The peer granted the connection window (WINDOW_UPDATE on stream 0).
  mutating func grantedWindow() { stalledSince = nil }

  /// Checked now and then: whether frames have waited for the connection's window longer than
  /// the limit, counted from the first check that found them waiting since the last grant.
  /// `waiting`: frames wait for it now.
  mutating func checkWindow(waiting: Bool, now: NIODeadline) -> Violation? {
    guard waiting, let timeout = limits.stalledWindowTimeout else {
      stalledSince = nil
      return nil
    }
    guard let since = stalledSince else {
      stalledSince = now
      return nil
    }
    return now - since >= timeout ? .stalledWindow : nil
  }
}
