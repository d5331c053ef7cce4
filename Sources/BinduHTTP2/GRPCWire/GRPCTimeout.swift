/// The `grpc-timeout` request header: an integer of at most 8 digits and a unit (H M S m u n).
public enum GRPCTimeout {
  /// The timeout in nanoseconds, or `nil` when the value is malformed.
  public static func parse(_ value: Substring) -> Int64? {
    guard let unit = value.last, value.count >= 2, value.count <= 9,
      let amount = Int64(value.dropLast()), amount >= 0
    else { return nil }
    let nanos: Int64
    switch unit {
    case "H": nanos = 3_600_000_000_000
    case "M": nanos = 60_000_000_000
    case "S": nanos = 1_000_000_000
    case "m": nanos = 1_000_000
    case "u": nanos = 1_000
    case "n": nanos = 1
    default: return nil
    }
    let (product, overflow) = amount.multipliedReportingOverflow(by: nanos)
    return overflow ? Int64.max : product
  }

  /// Formats a timeout with the finest unit that fits in 8 digits, rounding up so the callee
  /// never gets less time than the caller has left.
  public static func format(nanoseconds: Int64) -> String {
    let nanos = max(nanoseconds, 1)
    let units: [(Int64, Character)] = [(1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M")]
    for (size, unit) in units {
      let amount = (nanos + size - 1) / size
      if amount <= 99_999_999 { return "\(amount)\(unit)" }
    }
    return "\(min((nanos + 3_599_999_999_999) / 3_600_000_000_000, 99_999_999))H"
  }
}
