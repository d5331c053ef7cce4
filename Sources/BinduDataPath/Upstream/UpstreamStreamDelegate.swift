import NIOCore
import NIOHTTP2

/// What a stream to a replica reports to the call that opened it. Every method runs on the
/// connection's event loop, and nothing is reported after the stream closed or was cancelled.
package protocol UpstreamStreamDelegate: AnyObject {
  /// A frame of the replica's response: HEADERS, DATA or trailers.
  func upstreamRead(_ payload: HTTP2Frame.FramePayload)

  /// The stream ended. `reason` is the reset's code (`nil` when the stream ended normally or its
  /// connection was lost); `failure` says what went wrong, when known.
  func upstreamClosed(reason: HTTP2ErrorCode?, failure: String?)

  /// The replica's GOAWAY names an earlier stream as its last: it never began this one, which
  /// is closed, and no more is reported (RFC 9113 §6.8).
  func upstreamNeverBegan(_ failure: String)
}

/// One stream to a replica, as its call holds it.
package struct UpstreamStream {
  /// The stream's ID on its connection.
  let id: HTTP2StreamID
  let connection: UpstreamStreams

  /// Sends `payload` on the stream (flushed once per event-loop tick); `promise` completes once
  /// it is written.
  package func write(_ payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>? = nil) {
    connection.write(payload, on: id, promise: promise)
  }

  /// The replica's SETTINGS_MAX_HEADER_LIST_SIZE, if it announced one.
  var peerMaxHeaderListSize: Int? { connection.connection?.peerMaxHeaderListSize }

  /// Resets the stream (`CANCEL`) unless it has already closed; nothing more is reported.
  package func cancel() {
    connection.cancel(id)
  }
}
