import BinduHTTP2
import BinduMeshConfig
import GRPCCore
import NIOHPACK
import Tracing

/// One forwarded call's spans: a server span for the call the mesh received, continuing the
/// caller's `traceparent` when it sent one, and a client span for each attempt on a replica,
/// whose context the replica gets in `traceparent` / `tracestate`.
///
/// Attributes follow OpenTelemetry's RPC conventions (`rpc.system`, `rpc.service`, `rpc.method`,
/// `rpc.grpc.status_code`, `server.address`, `server.port`); the mesh's own are `bindu_mesh.…`.
/// A call is traced only when tracing is on: a call without a tracer holds no `CallTrace`. A call
/// left out by sampling still gets spans (their context goes to the replica, marked not sampled),
/// but no attributes or events: those are built only for spans that are recorded.
struct CallTrace {
  private let tracer: MeshTracer
  private let name: String
  /// The call the mesh received.
  let server: any Span
  /// The attempt in progress, if any.
  private(set) var attempt: (any Span)?
  /// Bytes of the request's and the response's DATA frames.
  var requestBytes = 0
  var responseBytes = 0

  /// Starts the call's span from its request headers; `path` is its `:path`.
  init(tracer: MeshTracer, headers: HPACKHeaders, path: String, pool: String, deadline: Duration?) {
    self.tracer = tracer
    name = String(path.dropFirst())
    let parent = tracer.extract(headers, using: HPACKTraceExtractor())
    server = tracer.startSpan(name, context: parent, kind: .server)
    guard server.isRecording else { return }
    let (service, method) = GRPCCallMetrics.split(path: path)
    var attributes = SpanAttributes()
    attributes["rpc.system"] = "grpc"
    attributes["rpc.service"] = String(service)
    attributes["rpc.method"] = String(method)
    attributes["bindu_mesh.pool"] = pool
    if let deadline { attributes["bindu_mesh.deadline_ms"] = Int(deadline.secondsValue * 1000) }
    server.attributes = attributes
  }

  /// The call waits in the pool's queue: every replica is at its limit.
  func queued() {
    guard server.isRecording else { return }
    server.addEvent(SpanEvent(name: "queued"))
  }

  /// The call left the pool's queue after `waited`.
  func leftQueue(waited: Duration) {
    guard server.isRecording else { return }
    var attributes = SpanAttributes()
    attributes["bindu_mesh.queue_wait_ms"] = waited.secondsValue * 1000
    server.addEvent(SpanEvent(name: "left queue", attributes: attributes))
  }

  /// Starts attempt `number` on `replica`; `retrying` says why the previous one did not do.
  mutating func attemptBegan(replica: HostPort, number: Int, retrying reason: String?) {
    endAttempt(code: nil, movedOn: nil)
    let span = tracer.startSpan(name, context: server.context, kind: .client)
    attempt = span
    guard span.isRecording else { return }
    var attributes = SpanAttributes()
    attributes["rpc.system"] = "grpc"
    attributes["server.address"] = replica.host
    attributes["server.port"] = replica.port
    attributes["bindu_mesh.attempt"] = number
    if let reason { attributes["bindu_mesh.retry_reason"] = reason }
    span.attributes = attributes
  }

  /// Ends the attempt in progress with `code` (`nil`: unknown); `movedOn` says why the call
  /// went on to another replica, when it did.
  mutating func endAttempt(code: Int?, movedOn reason: String?) {
    guard let span = attempt else { return }
    attempt = nil
    guard span.isRecording else {
      span.end()
      return
    }
    if let code {
      span.attributes["rpc.grpc.status_code"] = code
      if code != 0 { span.setStatus(SpanStatus(code: .error, message: Status.Code(rawValue: code)?.canonicalName)) }
    }
    if let reason {
      span.attributes["bindu_mesh.moved_on"] = reason
      span.setStatus(SpanStatus(code: .error, message: reason))
    }
    span.end()
  }

  /// Writes the current attempt's context (or the call's) into the headers sent to the replica.
  func inject(into headers: inout HPACKHeaders) {
    headers.remove(name: "traceparent")
    headers.remove(name: "tracestate")
    tracer.inject((attempt ?? server).context, into: &headers, using: HPACKTraceInjector())
  }

  /// Ends the call's span with the status its caller got (`message`: the mesh's own, if it
  /// answered itself).
  mutating func ended(code: Int, message: String?, attempts: Int) {
    endAttempt(code: code, movedOn: nil)
    guard server.isRecording else {
      server.end()
      return
    }
    var attributes = server.attributes
    attributes["rpc.grpc.status_code"] = code
    attributes["bindu_mesh.attempts"] = attempts
    attributes["bindu_mesh.request_bytes"] = requestBytes
    attributes["bindu_mesh.response_bytes"] = responseBytes
    server.attributes = attributes
    if code != 0 {
      let name = Status.Code(rawValue: code)?.canonicalName ?? "\(code)"
      let said = message.flatMap { $0.isEmpty ? nil : "\(name): \($0)" }
      server.setStatus(SpanStatus(code: .error, message: said ?? name))
    }
    server.end()
  }
}
