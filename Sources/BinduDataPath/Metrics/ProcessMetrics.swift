import BinduMeshConfig
import CoreMetrics
import Foundation
import Synchronization

/// The process's own figures under the names Prometheus clients use (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`), read from `/proc/self` at each scrape, and
/// `bindu_mesh_build_info{version}`. Where there is no `/proc` (macOS), only the build info.
package final class ProcessMetrics: Sendable {
  private let cpuSeconds: FloatingPointCounter
  private let resident: Gauge
  private let virtual: Gauge
  private let openFDs: Gauge
  private let maxFDs: Gauge
  private let startTime: Gauge
  private let cpuCounted = Mutex<Double>(0)
  /// Clock ticks per second, the unit of `/proc/self/stat`'s times.
  private static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

  package init(metrics: MeshMetrics) {
    let factory = metrics.factory
    cpuSeconds = FloatingPointCounter(label: "process_cpu_seconds_total", dimensions: [], factory: factory)
    resident = Gauge(label: "process_resident_memory_bytes", dimensions: [], factory: factory)
    virtual = Gauge(label: "process_virtual_memory_bytes", dimensions: [], factory: factory)
    openFDs = Gauge(label: "process_open_fds", dimensions: [], factory: factory)
    maxFDs = Gauge(label: "process_max_fds", dimensions: [], factory: factory)
    startTime = Gauge(label: "process_start_time_seconds", dimensions: [], factory: factory)
    metrics.gauge("build_info", [("version", BinduMeshVersion.current)]).record(1)
    if let fields = Self.selfStat(), let started = Self.field(22, of: fields), let boot = Self.bootTime() {
      startTime.record(boot + started / Self.ticks)
    }
  }

  /// Reads `/proc/self` and sets the figures that change (the start time is set once).
  package func update() {
    guard let fields = Self.selfStat() else { return }
    func field(_ number: Int) -> Double? { Self.field(number, of: fields) }
    let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
    if let user = field(14), let system = field(15) {
      let total = (user + system) / Self.ticks
      let delta = cpuCounted.withLock { counted -> Double in
        defer { counted = max(counted, total) }
        return total - counted
      }
      if delta > 0 { cpuSeconds.increment(by: delta) }
    }
    if let size = field(23) { virtual.record(size) }
    if let pages = field(24) { resident.record(pages * pageSize) }
    if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
      openFDs.record(entries.count)
    }
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFDs.record(Double(limit.rlim_cur)) }
  }

  /// The fields of `/proc/self/stat` after the command's closing parenthesis (state is field 3;
  /// utime 14, stime 15, starttime 22, vsize 23, rss 24 in pages).
  private static func selfStat() -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return nil }
    return stat[stat.index(after: close)...].split(separator: " ")
  }

  private static func field(_ number: Int, of fields: [Substring]) -> Double? {
    fields.count > number - 3 ? Double(fields[number - 3]) : nil
  }

  /// When the machine booted, in seconds since 1970 (`btime` of `/proc/stat`).
  private static func bootTime() -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
    return text.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) }
  }
}
