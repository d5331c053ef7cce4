/// Round-robin choice over a list that changes: each pick takes the next index, skipping
/// entries the caller excludes (ones that already failed this call).
package struct RoundRobin: Sendable {
  private var next = 0

  /// Creates a balancer that starts at the first entry.
  package init() {}

  /// The index of the next entry that `isExcluded` does not reject, or `nil` if none is left.
  package mutating func pick(count: Int, isExcluded: (Int) -> Bool) -> Int? {
    guard count > 0 else { return nil }
    for offset in 0..<count {
      let index = (next + offset) % count
      if !isExcluded(index) {
        next = (index + 1) % count
        return index
      }
    }
    return nil
  }
}
