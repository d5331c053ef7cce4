import NIOHTTP2

/// A violation of HTTP/2 that ends a whole connection (RFC 9113 §5.4.1): the connection sends
/// GOAWAY with `code` and closes.
struct HTTP2ConnectionError: Error, CustomStringConvertible {
  var code: HTTP2ErrorCode
  var reason: String
  /// The guard that fired, when the peer flooded rather than broke the protocol.
  var violation: HTTP2Guards.Violation?

  init(_ code: HTTP2ErrorCode, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  /// A guard's limit broken: ENHANCE_YOUR_CALM.
  init(_ violation: HTTP2Guards.Violation, limits: HTTP2Guards.Limits) {
    self.init(.enhanceYourCalm, violation.describe(limits))
    self.violation = violation
  }

  /// The label of the GOAWAY's cause in logs and metrics: the guard, or the error code.
  var label: String { violation?.rawValue ?? "\(code)" }

  var description: String { "HTTP/2 \(code): \(reason)" }
}
