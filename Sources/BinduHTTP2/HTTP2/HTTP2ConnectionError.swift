import NIOHTTP2

/// A violation of HTTP/2 that ends a whole connection (RFC 9113 §5.4.1): the connection sends
/// GOAWAY with `code` and closes.
public struct HTTP2ConnectionError: Error, CustomStringConvertible {
  public var code: HTTP2ErrorCode
  public var reason: String
  /// The guard that fired, when the peer flooded rather than broke the protocol.
  public var violation: HTTP2Guards.Violation?

  public init(_ code: HTTP2ErrorCode, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  /// A guard's limit broken: ENHANCE_YOUR_CALM.
  public init(_ violation: HTTP2Guards.Violation, limits: HTTP2Guards.Limits) {
    self.init(.enhanceYourCalm, violation.describe(limits))
    self.violation = violation
  }

  /// The label of the GOAWAY's cause in logs and metrics: the guard, or the error code.
  public var label: String { violation?.rawValue ?? code.label }

  public var description: String { "HTTP/2 \(code): \(reason)" }
}

extension HTTP2ErrorCode {
  /// The code's RFC 9113 name in snake case (`protocol_error`), for logs and metric labels.
  public var label: String {
    let names = [
      "no_error", "protocol_error", "internal_error", "flow_control_error", "settings_timeout", "stream_closed",
      "frame_size_error", "refused_stream", "cancel", "compression_error", "connect_error", "enhance_your_calm",
      "inadequate_security", "http_1_1_required",
    ]
    return names.indices.contains(networkCode) ? names[networkCode] : "error_\(networkCode)"
  }
}
