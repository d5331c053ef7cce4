import Synchronization

/// The admin listener's port, known once it is bound.
final class AdminPort: Sendable {
  private let port = Mutex<(Int?, [CheckedContinuation<Int, Never>])>((nil, []))

  func set(_ value: Int) {
    let waiters = port.withLock { state -> [CheckedContinuation<Int, Never>] in
      state.0 = value
      defer { state.1 = [] }
      return state.1
    }
    waiters.forEach { $0.resume(returning: value) }
  }

  func value() async -> Int {
    await withCheckedContinuation { continuation in
      let known = port.withLock { state -> Int? in
        if let value = state.0 { return value }
        state.1.append(continuation)
        return nil
      }
      if let known { continuation.resume(returning: known) }
    }
  }
}
