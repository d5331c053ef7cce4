/// Least outstanding calls: the endpoint with the fewest calls in flight, counted from the moment
/// each call picked it (connecting and waiting calls count too, so calls do not pile onto a slow
/// replica while its connection opens).
///
/// Up to ``scanLimit`` endpoints, every one is compared, and ties go round-robin: with one call
/// at a time, the order is exactly round-robin's. Above that, two endpoints drawn at random
/// without replacement are compared ("power of two choices"), which keeps the pick O(1) and
/// avoids herding onto one endpoint that several callers saw as least loaded.
package struct LeastRequest: Sendable {
  /// Pools up to this size are scanned whole.
  package static let scanLimit = 10
  private var next = 0

  /// Creates a balancer that starts at the first entry.
  package init() {}

  /// The index of the entry with the least `load` that `isExcluded` does not reject, or `nil`
  /// when every entry is excluded.
  package mutating func pick(count: Int, load: (Int) -> Int, isExcluded: (Int) -> Bool) -> Int? {
    guard count > 0 else { return nil }
    if count > Self.scanLimit, let index = pickOfTwo(count: count, load: load, isExcluded: isExcluded) {
      return index
    }
    var best: (index: Int, load: Int)? = nil
    for offset in 0..<count {
      let index = (next + offset) % count
      guard !isExcluded(index) else { continue }
      let current = load(index)
      if best == nil || current < best!.load { best = (index, current) }
      if current == 0 { break }  // nothing beats an idle endpoint; the first in order wins the tie
    }
    guard let best else { return nil }
    next = (best.index + 1) % count
    return best.index
  }

  /// Two random distinct entries, the less loaded one; `nil` when either is excluded (a retry's
  /// tried endpoints, or full ones), and the caller then scans.
  private func pickOfTwo(count: Int, load: (Int) -> Int, isExcluded: (Int) -> Bool) -> Int? {
    let first = Int.random(in: 0..<count)
    var second = Int.random(in: 0..<(count - 1))
    if second >= first { second += 1 }
    guard !isExcluded(first), !isExcluded(second) else { return nil }
    return load(second) < load(first) ? second : first
  }
}
