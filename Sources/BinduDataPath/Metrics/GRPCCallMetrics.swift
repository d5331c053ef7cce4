import BinduContract
import BinduHTTP2
import CoreMetrics
import GRPCCore
import Synchronization

/// The go-grpc-prometheus family for one method, one side and one label set: `*_started_total`,
/// `*_handled_total` (by `grpc_code`), `*_msg_received_total`, `*_msg_sent_total` and the
/// `*_handling_seconds` histogram. Made once per label set and kept (see ``MeshMetrics``).
package final class GRPCCallMetrics: Sendable {
  /// `server` or `client`.
  package let side: String
  package let started: Counter
  package let messagesReceived: Counter
  package let messagesSent: Counter
  let handlingTime: Timer
  private let labels: [(String, String)]
  private let factory: any MetricsFactory
  private let handled: Mutex<[Int: Counter]>
  /// `grpc_code="OK"`, the common case, kept outside the lock.
  private let handledOK: Counter

  init(side: String, labels: [(String, String)], factory: any MetricsFactory) {
    self.side = side
    self.labels = labels
    self.factory = factory
    self.started = Counter(label: "grpc_\(side)_started_total", dimensions: labels, factory: factory)
    self.messagesReceived = Counter(label: "grpc_\(side)_msg_received_total", dimensions: labels, factory: factory)
    self.messagesSent = Counter(label: "grpc_\(side)_msg_sent_total", dimensions: labels, factory: factory)
    self.handlingTime = Timer(label: "grpc_\(side)_handling_seconds", dimensions: labels, factory: factory)
    self.handledOK = Counter(
      label: "grpc_\(side)_handled_total", dimensions: labels + [("grpc_code", Status.Code.ok.canonicalName)], factory: factory)
    self.handled = Mutex([0: handledOK])
  }

  /// Records a finished call: its status code and how long it took.
  package func finished(code: Int, after duration: Duration) {
    handledCounter(code).increment()
    handlingTime.recordNanoseconds(duration.nanoseconds)
  }

  private func handledCounter(_ code: Int) -> Counter {
    if code == 0 { return handledOK }
    return handled.withLock { counters in
      if let counter = counters[code] { return counter }
      let name = Status.Code.canonicalName(of: code)
      let counter = Counter(
        label: "grpc_\(side)_handled_total", dimensions: labels + [("grpc_code", name)], factory: factory)
      counters[code] = counter
      return counter
    }
  }

  /// The `grpc_type` of a method of the contract (`HandleMessagesStream` streams its answer).
  static func type(ofMethod method: Substring) -> String {
    method.hasSuffix("Stream") ? "server_stream" : "unary"
  }

  /// The path metrics are labelled with: `path` when it is a method of the contract or of
  /// `grpc.health.v1.Health`, otherwise `/unknown/unknown` (`grpc_service` and `grpc_method`
  /// "unknown"), so that callers sending made-up paths cannot grow `/metrics` without bound.
  static func labelPath(_ path: String) -> String {
    contractPaths.contains(path) ? path : unknownPath
  }

  static let unknownPath = "/unknown/unknown"

  private static let contractPaths: Set<String> = Set(
    (Bindu_Grpc_AgentHandler.Method.descriptors + Bindu_Grpc_BinduService.Method.descriptors).map {
      "/" + $0.fullyQualifiedMethod
    } + [GRPCHealthAnswer.checkPath, GRPCHealthAnswer.watchPath])

  /// `grpc_service` and `grpc_method` of a path such as `/bindu.grpc.AgentHandler/HandleMessages`.
  static func split(path: String) -> (service: Substring, method: Substring) {
    let trimmed = path.drop { $0 == "/" }
    guard let slash = trimmed.lastIndex(of: "/") else { return ("unknown", trimmed) }
    return (trimmed[..<slash], trimmed[trimmed.index(after: slash)...])
  }
}
