import NIOHTTP2

/// A map from stream ID to `Value` for the data path's per-frame lookups: open addressing with
/// linear probing, placed by the stream ID itself. Stream IDs of one side are consecutive odd
/// numbers, so they fall in consecutive slots with no hashing (a `Dictionary` runs SipHash on
/// every lookup).
public struct StreamIDMap<Value> {
  /// Slot keys; 0 (the root stream, never stored) marks an empty slot.
  @usableFromInline var keys: [Int32]
  @usableFromInline var values: [Value?]
  @usableFromInline var mask: Int
  @usableFromInline var storedCount = 0
  /// How many streams have a value.
  @inlinable public var count: Int { storedCount }

  @inlinable public init() {
    keys = Array(repeating: 0, count: 16)
    values = Array(repeating: nil, count: 16)
    mask = 15
  }

  @inlinable public var isEmpty: Bool { storedCount == 0 }

  /// The IDs in the map, in no particular order.
  @inlinable public var ids: [HTTP2StreamID] {
    keys.compactMap { $0 == 0 ? nil : HTTP2StreamID($0) }
  }

  @inlinable public subscript(id: HTTP2StreamID) -> Value? {
    get {
      guard let slot = find(Int32(id)) else { return nil }
      return values[slot]
    }
    set {
      if let newValue { insert(Int32(id), newValue) } else { removeValue(forKey: id) }
    }
  }

  /// Removes `id`; returns its value, if it was there.
  @discardableResult
  @inlinable public mutating func removeValue(forKey id: HTTP2StreamID) -> Value? {
    guard var hole = find(Int32(id)) else { return nil }
    let removed = values[hole]
    // Backward-shift deletion: later entries of the probe run move up, so no slot is left that a
    // lookup would stop at too early.
    var next = hole
    while true {
      next = (next + 1) & mask
      let key = keys[next]
      if key == 0 { break }
      let home = self.home(key)
      let stays = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next)
      if !stays {
        keys[hole] = key
        values[hole] = values[next]
        hole = next
      }
    }
    keys[hole] = 0
    values[hole] = nil
    storedCount -= 1
    return removed
  }

  /// Removes every entry.
  @inlinable public mutating func removeAll() {
    self = StreamIDMap()
  }

  @inlinable func home(_ key: Int32) -> Int { Int(key >> 1) & mask }

  @inlinable func find(_ key: Int32) -> Int? {
    var slot = home(key)
    while true {
      let found = keys[slot]
      if found == key { return slot }
      if found == 0 { return nil }
      slot = (slot + 1) & mask
    }
  }

  @inlinable mutating func insert(_ key: Int32, _ value: Value) {
    var slot = home(key)
    while keys[slot] != 0 && keys[slot] != key { slot = (slot + 1) & mask }
    if keys[slot] == 0 {
      guard (storedCount + 1) * 2 <= keys.count else {
        grow()
        insert(key, value)
        return
      }
      storedCount += 1
      keys[slot] = key
    }
    values[slot] = value
  }

  @inlinable mutating func grow() {
    let oldKeys = keys
    let oldValues = values
    keys = Array(repeating: 0, count: oldKeys.count * 2)
    values = Array(repeating: nil, count: oldKeys.count * 2)
    mask = keys.count - 1
    storedCount = 0
    for (key, value) in zip(oldKeys, oldValues) where key != 0 { insert(key, value!) }
  }
}
