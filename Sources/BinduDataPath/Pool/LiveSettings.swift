import BinduMeshConfig
import Synchronization

/// The mesh-wide settings a config reload changes while the mesh runs, read by the data path:
/// timeouts and limits of calls (`upstream`), of callers' connections (`callbacks`), the grace
/// period of a drain and the access log; and the tracer, which only a restart changes.
///
/// Reading ``current`` takes a lock; a caller's connection keeps a ``Snapshot`` and refreshes it
/// (``refresh(_:)``) for each new call with one atomic load, taking the lock only after a reload.
package final class LiveSettings: Sendable {
  /// The values in force.
  package struct Values: Sendable, Hashable {
    var upstream: MeshConfig.Upstream
    var callers: MeshConfig.Callbacks
    var grace: Duration
    var accessLog: Bool

    package init(_ config: MeshConfig) {
      upstream = config.upstream
      callers = config.callbacks
      grace = config.shutdown.gracePeriod
      accessLog = config.admin.accessLog
    }
  }

  /// Values as read at one generation.
  struct Snapshot: Sendable {
    fileprivate(set) var generation: Int
    fileprivate(set) var values: Values
  }

  private let generation = Atomic<Int>(0)
  private let values: Mutex<Values>
  private let accessLogOn: Atomic<Bool>
  /// The tracer of forwarded calls; `nil`: tracing is off.
  let tracer: MeshTracer?

  package init(_ config: MeshConfig, tracer: MeshTracer? = nil) {
    self.tracer = tracer
    let values = Values(config)
    self.values = Mutex(values)
    self.accessLogOn = Atomic(values.accessLog)
  }

  /// The values in force now.
  var current: Snapshot {
    values.withLock { Snapshot(generation: generation.load(ordering: .acquiring), values: $0) }
  }

  /// Whether every call is logged (read without a lock).
  var accessLog: Bool { accessLogOn.load(ordering: .relaxed) }

  /// Brings `snapshot` up to date if a reload changed the values since it was read.
  func refresh(_ snapshot: inout Snapshot) {
    guard generation.load(ordering: .acquiring) != snapshot.generation else { return }
    snapshot = current
  }

  /// Puts `new` in force; `false` when nothing changed.
  @discardableResult
  package func update(_ new: Values) -> Bool {
    values.withLock { values in
      guard values != new else { return false }
      values = new
      accessLogOn.store(new.accessLog, ordering: .relaxed)
      generation.add(1, ordering: .releasing)
      return true
    }
  }
}
