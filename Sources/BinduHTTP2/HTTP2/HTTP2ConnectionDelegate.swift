import NIOHTTP2

/// What an ``HTTP2Connection`` reports to whoever routes its streams (``CallerStreams``
/// on the core's side, ``UpstreamStreams`` on a replica's). Every method runs on the
/// connection's event loop.
public protocol HTTP2ConnectionDelegate: AnyObject {
  /// The connection is up and its preface and SETTINGS are written.
  func connectionActive()

  /// HEADERS (a whole header block) or DATA of a stream. On a server, the first HEADERS of a
  /// stream opens it.
  func received(_ payload: HTTP2Frame.FramePayload, on streamID: HTTP2StreamID)

  /// A stream closed: both sides ended it (`reason` `nil`), or the peer reset it (`reason` is the
  /// code), or this side reset it because the peer broke its flow control.
  func streamClosed(_ streamID: HTTP2StreamID, reason: HTTP2ErrorCode?)

  /// A server refused a caller's stream (``RequestHeaderCheck``): a malformed one was reset with
  /// PROTOCOL_ERROR, one that is not gRPC's was answered with its HTTP status; either never
  /// reached ``received(_:on:)``. For trailers or DATA that break the request (`reason`
  /// `.malformed` or `.contentLength`), the stream is reset and closed.
  func refusedRequest(on streamID: HTTP2StreamID, _ problem: String, reason: RequestRefusal)

  /// The peer's GOAWAY. The connection has already forgotten the streams this side opened above
  /// `lastStreamID`; the peer never began them.
  func receivedGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode)

  /// The peer acknowledged a PING.
  func receivedPingAck(_ data: HTTP2PingData)

  /// A user event that reached the connection (TLS handshake, quiescing, ...).
  func receivedEvent(_ event: Any)

  /// The connection failed: a protocol violation or a flood by the peer (`goAway` names it:
  /// ``HTTP2ConnectionError/label``; GOAWAY was sent), or an I/O error (`goAway` is `nil`). It
  /// is closing.
  func connectionFailed(_ reason: String, goAway: String?)

  /// The connection closed; every stream on it is gone.
  func connectionInactive()
}
