import BinduContract
import BinduHTTP2
import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import SwiftProtobuf

/// The mesh's own answer to `grpc.health.v1.Health/Check` on a callback listener: `SERVING`
/// when the pool can serve the core (see ``ReplicaPool/notReadyReason``), else `NOT_SERVING`.
/// The service name may be empty or the pool's agent name; another is `NOT_FOUND`.
enum GRPCHealthAnswer {
  /// The path answered locally.
  static let checkPath = "/grpc.health.v1.Health/Check"
  /// The streaming method, not offered.
  static let watchPath = "/grpc.health.v1.Health/Watch"

  /// The response frames to a complete `Check` request body (5-byte prefix and message).
  static func frames(for body: ByteBuffer, pool: ReplicaPool) -> (code: Int, frames: [HTTP2Frame.FramePayload]) {
    var body = body
    var request = Grpc_Health_V1_HealthCheckRequest()
    if body.readableBytes >= 5, body.readInteger(as: UInt8.self) == 0, let length = body.readInteger(as: UInt32.self),
      let bytes = body.readBytes(length: Int(length))
    {
      guard let parsed = try? Grpc_Health_V1_HealthCheckRequest(serializedBytes: bytes) else {
        return failure(.invalidArgument, "malformed HealthCheckRequest")
      }
      request = parsed
    }
    guard request.service.isEmpty || request.service == pool.name else {
      return failure(.notFound, "unknown service \"\(request.service)\": ask for \"\" or \"\(pool.name)\"")
    }
    let response = Grpc_Health_V1_HealthCheckResponse.with {
      $0.status = pool.notReadyReason == nil ? .serving : .notServing
    }
    let message: [UInt8] = (try? response.serializedBytes()) ?? []
    var data = ByteBuffer()
    data.writeInteger(UInt8(0))
    data.writeInteger(UInt32(message.count))
    data.writeBytes(message)
    let headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
    return (
      0,
      [
        .headers(.init(headers: headers)),
        .data(.init(data: .byteBuffer(data))),
        .headers(.init(headers: GRPCHeaders.trailers(.ok, message: ""), endStream: true)),
      ]
    )
  }

  private static func failure(_ code: Status.Code, _ message: String) -> (code: Int, frames: [HTTP2Frame.FramePayload]) {
    (code.rawValue, [.headers(.init(headers: GRPCHeaders.trailersOnly(code, message: message), endStream: true))])
  }
}
