import NIOHTTP2

/// A violation of HTTP/2 that ends a whole connection (RFC 9113 §5.4.1): the connection sends
/// GOAWAY with `code` and closes.
struct HTTP2ConnectionError: Error, CustomStringConvertible {
  var code: HTTP2ErrorCode
  var reason: String

  init(_ code: HTTP2ErrorCode, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  var description: String { "HTTP/2 \(code): \(reason)" }
}
