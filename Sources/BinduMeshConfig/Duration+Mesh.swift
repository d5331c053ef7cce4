import NIOCore

extension Duration {
  /// The duration in whole nanoseconds.
  @inlinable public var nanoseconds: Int64 {
    components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
  }

  /// The duration in seconds, for logs and reports.
  @inlinable public var secondsValue: Double {
    Double(components.seconds) + Double(components.attoseconds) / 1e18
  }

  /// The same span as a NIO `TimeAmount`.
  @inlinable public var timeAmount: TimeAmount { .nanoseconds(nanoseconds) }
}
