import BinduContract
import BinduDataPath
import BinduHTTP2
import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import SwiftProtobuf

/// One `AgentHandler.HealthCheck` call on the endpoint's probe connection: one of its own, beside the
/// connections calls use, so a replica busy with callers' streams is busy, not dead.
enum HealthProbe {
  /// What a probe found.
  struct Result: Sendable {
    var passed: Bool
    /// The replica's message, or why the probe failed.
    var message: String
    /// The call's gRPC status (`Unavailable` when it could not be made, `DeadlineExceeded` when
    /// it was not answered in time).
    var code: Int = 0
  }

  /// Probes `endpoint` for `pool`, counting the call in the pool's client metrics; never fails:
  /// errors and timeouts are a failed ``Result``.
  static func run(_ endpoint: Endpoint, pool: ReplicaPool) async -> Result {
    let metrics = endpoint.clientMetrics(pool: pool, path: path)
    metrics.started.increment()
    let started = ContinuousClock.now
    let result =
      (try? await run(endpoint, timeout: pool.policy.health.timeout).get())
      ?? Result(passed: false, message: "probe failed", code: Status.Code.unknown.rawValue)
    metrics.messagesSent.increment()
    if result.code == 0 { metrics.messagesReceived.increment() }
    metrics.finished(code: result.code, after: .now - started)
    return result
  }

  static let path = "/bindu.grpc.AgentHandler/HealthCheck"

  /// Probes `endpoint`; never fails: errors and timeouts are a failed ``Result``.
  static func run(_ endpoint: Endpoint, timeout: Duration) -> EventLoopFuture<Result> {
    let connection = endpoint.probeConnection
    let loop = connection.eventLoop
    return loop.flatSubmit {
      let probe = ProbeCall(promise: loop.makePromise(of: Result.self))
      let send = { (stream: UpstreamStream) in
        probe.stream = stream
        stream.write(.headers(.init(headers: requestHeaders(endpoint, timeout: timeout))))
        var body = ByteBuffer()
        body.writeInteger(UInt8(0))
        body.writeInteger(UInt32(0))
        stream.write(.data(.init(data: .byteBuffer(body), endStream: true)))
      }
      if let stream = connection.openStream(probe) {
        send(stream)
      } else {
        connection.openStreamAfterConnecting(probe) { result in
          switch result {
          case .success(let stream):
            send(stream)
          case .failure(let error):
            probe.end(.init(passed: false, message: "cannot connect: \(error)", code: Status.Code.unavailable.rawValue))
          }
        }
      }
      let timer = loop.assumeIsolated().scheduleTask(in: timeout.timeAmount) {
        probe.end(.init(passed: false, message: "no answer within \(timeout)", code: Status.Code.deadlineExceeded.rawValue))
      }
      probe.promise.futureResult.whenComplete { _ in timer.cancel() }
      return probe.promise.futureResult
    }
  }

  private static func requestHeaders(_ endpoint: Endpoint, timeout: Duration) -> HPACKHeaders {
    [
      ":method": "POST", ":scheme": "http", ":path": path,
      ":authority": endpoint.address.description, "content-type": "application/grpc", "te": "trailers",
      "grpc-timeout": GRPCTimeout.format(nanoseconds: timeout.nanoseconds),
    ]
  }
}

/// One probe's stream: collects the `HealthCheck` response and ends the probe once.
private final class ProbeCall: UpstreamStreamDelegate {
  let promise: EventLoopPromise<HealthProbe.Result>
  var stream: UpstreamStream?
  private var body = ByteBuffer()
  private var ended = false

  init(promise: EventLoopPromise<HealthProbe.Result>) {
    self.promise = promise
  }

  /// Ends the probe with `result` (the first result wins) and resets its stream if still open.
  func end(_ result: HealthProbe.Result) {
    guard !ended else { return }
    ended = true
    stream?.cancel()
    promise.succeed(result)
  }

  func upstreamRead(_ payload: HTTP2Frame.FramePayload) {
    switch payload {
    case .data(let data):
      if case .byteBuffer(var buffer) = data.data { body.writeBuffer(&buffer) }
    case .headers(let headers) where headers.endStream:
      end(Self.result(status: GRPCHeaders.status(of: headers.headers), headers: headers.headers, body: body))
    default:
      break
    }
  }

  func upstreamNeverBegan(_ failure: String) {
    end(.init(passed: false, message: failure, code: Status.Code.unavailable.rawValue))
  }

  func upstreamClosed(reason: HTTP2ErrorCode?, failure: String?) {
    let why = failure ?? reason.map { "stream reset (\($0))" } ?? "stream closed before an answer"
    end(.init(passed: false, message: why, code: Status.Code.unavailable.rawValue))
  }

  private static func result(status: Int?, headers: HPACKHeaders, body: ByteBuffer) -> HealthProbe.Result {
    guard status == 0 else {
      let code = status.flatMap(Status.Code.init(rawValue:))?.canonicalName ?? "\(status.map(String.init) ?? "no status")"
      return .init(
        passed: false, message: "status \(code): \(headers.first(name: "grpc-message") ?? "")",
        code: status ?? Status.Code.unknown.rawValue)
    }
    var body = body
    guard body.readableBytes >= 5, let _ = body.readInteger(as: UInt8.self), let length = body.readInteger(as: UInt32.self),
      let bytes = body.readBytes(length: Int(length)),
      let response = try? Bindu_Grpc_HealthCheckResponse(serializedBytes: bytes)
    else {
      return .init(passed: false, message: "malformed HealthCheckResponse")
    }
    return .init(passed: response.healthy, message: response.healthy ? "healthy" : "healthy=false: \(response.message)")
  }
}
