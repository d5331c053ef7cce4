import NIOCore

extension Duration {
  /// The duration in whole nanoseconds.
  var nanoseconds: Int64 {
    components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
  }

  /// The duration in seconds, for logs and reports.
  var secondsValue: Double {
    Double(components.seconds) + Double(components.attoseconds) / 1e18
  }

  /// The same span as a NIO `TimeAmount`.
  var timeAmount: TimeAmount { .nanoseconds(nanoseconds) }
}
