import NIOCore
import NIOHPACK

/// Why a caller's request was refused, as counted in
/// `bindu_mesh_http2_refused_requests_total{reason}`.
public enum RequestRefusal: String, Sendable, CaseIterable {
  /// Malformed (RFC 9113 §8.1.1, §8.2–8.3): reset with `PROTOCOL_ERROR`.
  case malformed
  /// A `:method` other than POST: answered 405.
  case method
  /// A `content-type` other than `application/grpc…`: answered 415.
  case contentType = "content_type"
  /// DATA that adds up to more or less than the request's `content-length`: reset.
  case contentLength = "content_length"
  /// A path that is neither the agent contract's nor `grpc.health.v1`'s: `UNIMPLEMENTED`.
  case path
}

/// The HTTP answer to a well-formed request that the mesh does not forward, because it is not a
/// gRPC call (what gRPC's own servers answer: RFC 9110 statuses, a short text body).
public enum LocalAnswer: Equatable, Sendable {
  /// 405: a `:method` other than POST; HEAD gets no body.
  case methodNotAllowed(head: Bool)
  /// 415: a `content-type` other than `application/grpc…`, or none.
  case unsupportedMediaType

  /// The reason it is counted under.
  public var refusal: RequestRefusal {
    switch self {
    case .methodNotAllowed: .method
    case .unsupportedMediaType: .contentType
    }
  }

  /// What the log line says.
  public var problem: String {
    switch self {
    case .methodNotAllowed: ":method is not POST (answered 405)"
    case .unsupportedMediaType: "content-type is not application/grpc (answered 415)"
    }
  }

  /// The response's header list, and its body (`nil`: none, the HEADERS end the stream).
  public var response: (HPACKHeaders, ByteBuffer?) {
    let (status, text, head): (String, String, Bool) =
      switch self {
      case .methodNotAllowed(let head): ("405", "bindu-mesh forwards gRPC calls only: use POST\n", head)
      case .unsupportedMediaType: ("415", "bindu-mesh forwards gRPC calls only: content-type must be application/grpc\n", false)
      }
    var headers: HPACKHeaders = [":status": status, "content-type": "text/plain; charset=utf-8"]
    if case .methodNotAllowed = self { headers.add(name: "allow", value: "POST") }
    headers.add(name: "content-length", value: "\(text.utf8.count)")
    return (headers, head ? nil : ByteBuffer(string: text))
  }
}
