import Foundation
import Logging
import Synchronization

/// The mesh's recent events for the status page: every log line at `notice` or above
/// (ejections, replicas joining and leaving, core registrations, retries, certificate reloads),
/// whatever the log level, in a ring of the last ``EventRing/capacity``.
package final class RecentEvents: Sendable {
  private let ring = Mutex(EventRing())

  /// Creates an empty ring.
  package init() {}

  /// `logger`, also writing its `notice`-and-above lines here, whatever its log level (then
  /// or later).
  package func recording(_ logger: Logger) -> Logger {
    var recording = logger
    recording.handler = EventLogHandler(inner: logger.handler, events: self)
    return recording
  }

  /// The events kept, newest first.
  package var newestFirst: [EventRing.Event] { ring.withLock { $0.newestFirst } }

  func keep(_ event: EventRing.Event) { ring.withLock { $0.append(event) } }
}

/// A bounded ring of events: appending past ``capacity`` drops the oldest.
package struct EventRing: Sendable {
  /// One event.
  package struct Event: Codable, Sendable, Hashable {
    /// When it happened.
    package var at: Date
    /// `notice`, `warning`, `error` or `critical`.
    package var level: String
    /// The pool it concerns, when one.
    package var pool: String?
    /// The log line's message.
    package var message: String
    /// The log line's other metadata, as `key=value` pairs.
    package var detail: String
  }

  /// How many events are kept.
  package static let capacity = 200
  private var events: [Event] = []
  private var next = 0

  /// Adds `event`, dropping the oldest when full.
  package mutating func append(_ event: Event) {
    if events.count < Self.capacity {
      events.append(event)
    } else {
      events[next] = event
    }
    next = (next + 1) % Self.capacity
  }

  /// The events, newest first.
  package var newestFirst: [Event] {
    guard events.count == Self.capacity else { return events.reversed() }
    return Array((events[next...] + events[..<next]).reversed())
  }
}

/// A log handler that passes every line to `inner` as its level says, and records the lines
/// at `notice` and above in ``RecentEvents`` whatever that level.
struct EventLogHandler: LogHandler {
  var inner: any LogHandler
  let events: RecentEvents

  /// The level the logger checks first: `inner`'s, or `notice` when that is higher.
  var logLevel: Logger.Level {
    get { min(inner.logLevel, .notice) }
    set { inner.logLevel = newValue }
  }

  var metadata: Logger.Metadata {
    get { inner.metadata }
    set { inner.metadata = newValue }
  }

  var metadataProvider: Logger.MetadataProvider? {
    get { inner.metadataProvider }
    set { inner.metadataProvider = newValue }
  }

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { inner[metadataKey: key] }
    set { inner[metadataKey: key] = newValue }
  }

  func log(event: LogEvent) {
    if event.level >= inner.logLevel { inner.log(event: event) }
    guard event.level >= .notice else { return }
    var all = inner.metadata
    if let extra = event.metadata { all.merge(extra) { $1 } }
    let pool = all.removeValue(forKey: "mesh.pool").map { "\($0)" }
    let detail = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    events.keep(.init(at: Date(), level: "\(event.level)", pool: pool, message: "\(event.message)", detail: detail))
  }
}
