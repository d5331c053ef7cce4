import Foundation

/// The status report as text tables for a terminal: what `bindu-mesh status` prints.
package enum StatusTable {
  /// Events printed (newest first).
  package static let eventsShown = 10

  /// The whole report: readiness, then each pool's cores and endpoints, certificates and the
  /// latest events.
  package static func render(_ report: StatusReport, admin: String) -> String {
    var lines = [
      "bindu-mesh \(report.version) at \(admin): \(report.ready ? "ready" : "NOT READY")"
        + (report.notReady.isEmpty ? "" : " (" + report.notReady.joined(separator: "; ") + ")")
    ]
    if report.pools.isEmpty { lines.append("no pool yet: waiting for a replica to register") }
    for pool in report.pools {
      lines.append("")
      lines.append(
        "POOL \(pool.agent)  \(pool.ready ? "ready" : "NOT READY: \(pool.notReadyReason ?? "")")  "
          + "listener \(pool.callbackListen)  in flight \(pool.callsInFlight)  queued \(pool.queuedCalls)")
      lines += pool.warnings.map { "  warning: \($0)" }
      lines += table(
        ["CORE", "REGISTERED", "SINCE", "TIMES", "DID", "LAST ERROR"],
        pool.cores.map { core in
          [
            core.core, core.registered ? "yes" : "no", core.registeredSince.map(age) ?? "-", "\(core.registrations)",
            core.did ?? "-", core.lastError ?? "",
          ]
        }
      ).map { "  " + $0 }
      lines += table(
        ["ENDPOINT", "ORIGIN", "STATE", "ROTATION", "IN-FLIGHT", "SUCCESS", "RPS", "P50", "P99", "PROBE", "EJECTIONS"],
        pool.endpoints.map { endpoint in
          let recent = endpoint.lastMinute
          return [
            endpoint.address, endpoint.origin, endpoint.state, endpoint.inRotation ? "yes" : "no",
            "\(endpoint.callsInFlight)", recent.successRate.map { String(format: "%.2f%%", $0 * 100) } ?? "-",
            String(format: "%.2f", recent.callsPerSecond), milliseconds(recent.p50Seconds),
            milliseconds(recent.p99Seconds),
            endpoint.lastProbe.map { "\($0.passed ? "passed" : "failed") \(Int($0.secondsAgo.rounded()))s ago" } ?? "-",
            "\(endpoint.ejections)",
          ]
        }
      ).map { "  " + $0 }
    }
    if !report.certificates.isEmpty {
      lines.append("")
      lines += table(
        ["CERTIFICATE", "EXPIRES", "DAYS LEFT"],
        report.certificates.map { [$0.use, $0.notAfter.formatted(.iso8601), "\(Int($0.daysLeft.rounded(.down)))"] })
    }
    if !report.events.isEmpty {
      lines.append("")
      lines.append("RECENT EVENTS")
      lines += report.events.prefix(eventsShown).map { event in
        "  \(event.at.formatted(.iso8601)) \(event.level) \(event.pool.map { "[\($0)] " } ?? "")\(event.message)"
          + (event.detail.isEmpty ? "" : " (\(event.detail))")
      }
    }
    return lines.joined(separator: "\n") + "\n"
  }

  /// Rows under a header, each column as wide as its widest cell.
  static func table(_ header: [String], _ rows: [[String]]) -> [String] {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
      row.enumerated().map { column, cell in
        column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
      }.joined(separator: "  ")
    }
  }

  private static func milliseconds(_ seconds: Double?) -> String {
    guard let seconds else { return "-" }
    return seconds < 0.01 ? String(format: "%.2fms", seconds * 1000) : String(format: "%.0fms", seconds * 1000)
  }

  private static func age(_ since: Date) -> String {
    let seconds = Int(Date().timeIntervalSince(since))
    if seconds < 120 { return "\(seconds)s" }
    if seconds < 7200 { return "\(seconds / 60)m" }
    return seconds < 172_800 ? "\(seconds / 3600)h" : "\(seconds / 86_400)d"
  }
}
