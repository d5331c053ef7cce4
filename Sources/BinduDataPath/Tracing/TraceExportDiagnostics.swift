import CoreMetrics
import Logging
import Synchronization

/// The OTLP exporter's own log lines, read for what they say about lost spans: a full queue
/// ("Spans were dropped ...", `dropped_count`) and a batch the collector did not take ("Failed
/// to export batch.", `batch_size`) both count in `bindu_mesh_trace_spans_dropped_total`.
/// Warnings reach the mesh's log at most once a minute, with what was dropped since.
struct TraceExportDiagnostics: LogHandler {
  var metadata: Logger.Metadata = [:]
  var logLevel: Logger.Level = .info
  private let state: Shared

  init(dropped: CoreMetrics.Counter, logger: Logger) {
    state = Shared(dropped: dropped, logger: logger)
  }

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(
    level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String, file: String,
    function: String, line: UInt
  ) {
    let all = metadata.merging(extra ?? [:]) { $1 }
    let lost = Self.spansLost(message: message.description, metadata: all)
    if lost > 0 { state.dropped.increment(by: Int64(lost)) }
    guard level >= .warning else { return }
    state.warn(message.description, lost: lost, error: all["error"].map { "\($0)" })
  }

  /// How many spans a line of the exporter says were lost.
  static func spansLost(message: String, metadata: Logger.Metadata) -> Int {
    func number(_ key: String) -> Int { metadata[key].flatMap { Int("\($0)") } ?? 0 }
    if message.hasPrefix("Spans were dropped") { return number("dropped_count") }
    if message.hasPrefix("Failed to export batch") { return number("batch_size") }
    return 0
  }

  /// What every copy of the handler shares: the counter and the log's rate limit.
  final class Shared: Sendable {
    let dropped: CoreMetrics.Counter
    private let logger: Logger
    /// When the last line was logged, and the spans lost and lines held back since.
    private let since = Mutex<(last: ContinuousClock.Instant?, lost: Int, held: Int)>((nil, 0, 0))

    init(dropped: CoreMetrics.Counter, logger: Logger) {
      self.dropped = dropped
      self.logger = logger
    }

    func warn(_ message: String, lost: Int, error: String?) {
      let now = ContinuousClock.now
      let due: (lost: Int, held: Int)? = since.withLock { since in
        since.lost += lost
        if let last = since.last, now - last < .seconds(60) {
          since.held += 1
          return nil
        }
        defer { since = (now, 0, 0) }
        return (since.lost, since.held)
      }
      guard let due else { return }
      logger.warning(
        "traces: spans not exported (collector slow or unreachable; calls are not affected)",
        metadata: [
          "otel.message": "\(message)", "otel.error": "\(error ?? "")", "mesh.spans_lost": "\(due.lost)",
          "mesh.lines_held_back": "\(due.held)",
        ])
    }
  }
}
