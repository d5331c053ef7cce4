import BinduContract
import NIOCore
import NIOHPACK
import NIOHTTP2
import SwiftProtobuf

/// One `AgentHandler.HealthCheck` call on an endpoint's own data-path connection, so a probe
/// tests the connection calls use.
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
      ?? Result(passed: false, message: "probe failed", code: GRPCStatusCode.unknown.rawValue)
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
      let promise = loop.makePromise(of: Result.self)
      let timeLimit = timeout.timeAmount
      connection.openStream { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(ProbeHandler(promise: promise))
        }
      }
      .whenComplete { result in
        switch result {
        case .failure(let error):
          promise.succeed(Result(passed: false, message: "cannot connect: \(error)", code: GRPCStatusCode.unavailable.rawValue))
        case .success(let channel):
          channel.write(HTTP2Frame.FramePayload.headers(.init(headers: requestHeaders(endpoint, timeout: timeout))), promise: nil)
          var body = ByteBuffer()
          body.writeInteger(UInt8(0))
          body.writeInteger(UInt32(0))
          channel.writeAndFlush(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(body), endStream: true)), promise: nil)
          let timer = loop.scheduleTask(in: timeLimit) {
            promise.succeed(
              Result(passed: false, message: "no answer within \(timeout)", code: GRPCStatusCode.deadlineExceeded.rawValue))
            channel.close(promise: nil)
          }
          promise.futureResult.whenComplete { _ in timer.cancel() }
        }
      }
      return promise.futureResult
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

/// Collects a `HealthCheck` response on a probe stream.
private final class ProbeHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame.FramePayload

  private let promise: EventLoopPromise<HealthProbe.Result>
  private var body = ByteBuffer()

  init(promise: EventLoopPromise<HealthProbe.Result>) {
    self.promise = promise
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .data(let data):
      if case .byteBuffer(var buffer) = data.data { body.writeBuffer(&buffer) }
    case .headers(let headers) where headers.endStream:
      promise.succeed(Self.result(status: GRPCHeaders.status(of: headers.headers), headers: headers.headers, body: body))
      context.close(promise: nil)
    default:
      break
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    promise.succeed(.init(passed: false, message: "stream closed before an answer", code: GRPCStatusCode.unavailable.rawValue))
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    promise.succeed(.init(passed: false, message: "\(error)", code: GRPCStatusCode.unavailable.rawValue))
    context.close(promise: nil)
  }

  private static func result(status: Int?, headers: HPACKHeaders, body: ByteBuffer) -> HealthProbe.Result {
    guard status == 0 else {
      let code = status.flatMap(GRPCStatusCode.init(rawValue:))?.name ?? "\(status.map(String.init) ?? "no status")"
      return .init(
        passed: false, message: "status \(code): \(headers.first(name: "grpc-message") ?? "")",
        code: status ?? GRPCStatusCode.unknown.rawValue)
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
