/// One endpoint's standing in its pool, the only place its load, call time, health, drain and
/// recent calls are kept: each changes in ``PoolState``, under the pool's lock, and nowhere else.
struct EndpointEntry: Sendable {
  var health: EndpointHealth
  /// Calls that picked it and have not ended: the least-request balancer's load. Taken by a
  /// pick, given back by ``PoolState/release(_:attempt:now:)``.
  var outstanding = 0
  /// How long its calls take, in microseconds: an exponentially weighted moving average (1/8 per
  /// call) of the attempts it answered OK; 0 before the first (a replica failing fast must not
  /// look fast).
  var callTimeAverage = 0
  /// Drained by hand (the admin API): out of rotation whatever its health.
  var drained = false
  /// Its calls of the last minute, for the status page.
  var recentCalls = CallWindow()
}

/// A pool's endpoint entries by the endpoint's identity: one dense array, read and changed in
/// place (a pick and a release allocate nothing), and where each endpoint's entry is in it.
struct EndpointEntries: Sendable {
  private var slots: [ObjectIdentifier: Int] = [:]
  private var ids: [ObjectIdentifier] = []
  /// The entries, in no particular order: the one of an endpoint is at ``slot(of:)``.
  var values: [EndpointEntry] = []

  /// Where the entry of the endpoint `id` is in ``values``, if it has one.
  func slot(of id: ObjectIdentifier) -> Int? { slots[id] }

  /// The entry of the endpoint `id`, if it has one.
  subscript(id: ObjectIdentifier) -> EndpointEntry? { slots[id].map { values[$0] } }

  /// The balancer's load of the endpoint `id`: its calls outstanding (0 without an entry).
  func outstanding(_ id: ObjectIdentifier) -> Int { slots[id].map { values[$0].outstanding } ?? 0 }

  /// The balancer's cost of the endpoint `id`: its call-time average (0: not known yet).
  func callTime(_ id: ObjectIdentifier) -> Int { slots[id].map { values[$0].callTimeAverage } ?? 0 }

  /// Counts a call the balancer gave the endpoint `id` as outstanding on it.
  mutating func take(_ id: ObjectIdentifier) {
    if let slot = slots[id] { values[slot].outstanding += 1 }
  }

  /// Gives the endpoint `id` an entry, unless it has one.
  mutating func insert(_ id: ObjectIdentifier, _ entry: @autoclosure () -> EndpointEntry) {
    guard slots[id] == nil else { return }
    slots[id] = values.count
    ids.append(id)
    values.append(entry())
  }

  /// Removes the entry of the endpoint `id` (the last entry takes its place).
  mutating func remove(_ id: ObjectIdentifier) {
    guard let slot = slots.removeValue(forKey: id) else { return }
    let last = values.count - 1
    if slot != last {
      values.swapAt(slot, last)
      ids.swapAt(slot, last)
      slots[ids[slot]] = slot
    }
    values.removeLast()
    ids.removeLast()
  }
}
