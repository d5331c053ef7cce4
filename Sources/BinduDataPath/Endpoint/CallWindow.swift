/// An endpoint's calls over the last minute, for the status page: a ring of per-second buckets,
/// each with its calls, its failures and a histogram of call times.
///
/// Every array is allocated once, so recording a call allocates nothing. The time is given as
/// whole seconds on one clock (``second(of:)``), which keeps the rules testable without one.
package struct CallWindow: Sendable {
  /// Seconds the window covers.
  static let seconds = 60
  /// Upper bounds of the histogram's buckets, in microseconds: from 250 µs, each 1.6 times the
  /// last, to over a minute; a last, open bucket takes longer calls.
  static let bounds: [Int] = (0..<28).map { Int(250 * pow16(of: $0)) }
  private static let stride = bounds.count + 1

  /// What the window holds at a given second.
  package struct Summary: Sendable, Hashable {
    /// Calls that ended in the window.
    package var calls = 0
    /// Calls that ended with a status other than OK.
    package var failures = 0
    /// Calls per second, averaged over the whole window.
    package var callsPerSecond: Double { Double(calls) / Double(CallWindow.seconds) }
    /// The share of calls that ended OK; `nil` with no call.
    package var successRate: Double? { calls == 0 ? nil : Double(calls - failures) / Double(calls) }
    /// The median call time, in seconds; `nil` with no call.
    package var p50: Double?
    /// The 99th percentile of call times, in seconds; `nil` with no call.
    package var p99: Double?
  }

  private var second: [Int64]
  private var calls: [UInt32]
  private var failures: [UInt32]
  private var times: [UInt32]

  init() {
    second = Array(repeating: -1, count: Self.seconds)
    calls = Array(repeating: 0, count: Self.seconds)
    failures = Array(repeating: 0, count: Self.seconds)
    times = Array(repeating: 0, count: Self.seconds * Self.stride)
  }

  /// Adds a call that ended at `second` after `micros` microseconds.
  mutating func add(second now: Int64, micros: Int, ok: Bool) {
    let slot = Int(now % Int64(Self.seconds))
    if second[slot] != now {
      second[slot] = now
      calls[slot] = 0
      failures[slot] = 0
      for index in slot * Self.stride..<(slot + 1) * Self.stride { times[index] = 0 }
    }
    calls[slot] &+= 1
    if !ok { failures[slot] &+= 1 }
    times[slot * Self.stride + Self.bucket(micros)] &+= 1
  }

  /// The calls of the last ``seconds`` seconds up to and including `second`.
  package func summary(at now: Int64) -> Summary {
    var summary = Summary()
    var histogram = [Int](repeating: 0, count: Self.stride)
    for slot in 0..<Self.seconds where second[slot] > now - Int64(Self.seconds) && second[slot] <= now {
      summary.calls += Int(calls[slot])
      summary.failures += Int(failures[slot])
      for bucket in 0..<Self.stride { histogram[bucket] += Int(times[slot * Self.stride + bucket]) }
    }
    guard summary.calls > 0 else { return summary }
    summary.p50 = Self.quantile(0.5, of: histogram, count: summary.calls)
    summary.p99 = Self.quantile(0.99, of: histogram, count: summary.calls)
    return summary
  }

  /// The bucket of a call that took `micros`.
  static func bucket(_ micros: Int) -> Int {
    var low = 0
    var high = bounds.count
    while low < high {
      let middle = (low + high) / 2
      if bounds[middle] < micros { low = middle + 1 } else { high = middle }
    }
    return low
  }

  /// The `q` quantile in seconds, interpolated inside its bucket as Prometheus's
  /// `histogram_quantile` does (the open bucket answers with the last bound).
  static func quantile(_ q: Double, of histogram: [Int], count: Int) -> Double {
    let rank = q * Double(count)
    var below = 0
    for (bucket, inBucket) in histogram.enumerated() where inBucket > 0 {
      if Double(below + inBucket) >= rank {
        guard bucket < bounds.count else { return Double(bounds[bounds.count - 1]) / 1_000_000 }
        let lower = bucket == 0 ? 0 : Double(bounds[bucket - 1])
        let upper = Double(bounds[bucket])
        let fraction = max(0, rank - Double(below)) / Double(inBucket)
        return (lower + (upper - lower) * fraction) / 1_000_000
      }
      below += inBucket
    }
    return Double(bounds[bounds.count - 1]) / 1_000_000
  }

  private static func pow16(of exponent: Int) -> Double {
    (0..<exponent).reduce(1.0) { value, _ in value * 1.6 }
  }

  /// Whole seconds since the process's first use of the window, on the continuous clock.
  package static func second(of instant: ContinuousClock.Instant) -> Int64 {
    max(0, (instant - origin).components.seconds)
  }

  private static let origin = ContinuousClock.now
}
