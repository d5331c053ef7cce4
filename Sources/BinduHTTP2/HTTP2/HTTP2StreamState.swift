import NIOCore
import NIOHTTP2

/// What an ``HTTP2Connection`` knows of one open stream: its flow-control windows, which sides
/// have ended it, and the frames waiting for window.
struct HTTP2StreamState {
  /// A frame waiting to be written, with the promise its writer asked for.
  struct Waiting {
    var payload: HTTP2Frame.FramePayload
    var promise: EventLoopPromise<Void>?
  }

  /// Bytes the peer still accepts on this stream.
  var outboundWindow: Int
  /// Bytes this side still accepts on this stream.
  var inboundWindow: Int
  /// The stream's first HEADERS have been sent or received: the peer knows it.
  var opened = false
  /// This side has sent END_STREAM (or is about to: it waits in ``waiting``).
  var localEnded = false
  /// The peer has sent END_STREAM.
  var remoteEnded = false
  /// Bytes of DATA the request's `content-length` still announces; `nil` without one.
  var contentLengthLeft: Int?
  /// Frames held back by flow control, in order: once one waits, every later frame waits too.
  var waiting: [Waiting] = []
  /// Since when frames have waited for this stream's window with none granted (seen by
  /// ``HTTP2Connection/checkStalledWindows(now:)``).
  var stalledSince: NIODeadline?

  init(outboundWindow: Int, inboundWindow: Int) {
    self.outboundWindow = outboundWindow
    self.inboundWindow = inboundWindow
  }
}
