import NIOCore
import NIOHTTP2

/// The flow-control window of one stream whose DATA the mesh forwards to another connection.
///
/// The sender gets its window back only once what it sent has been written on the other side:
/// the frame that completes a batch (``batch``, 64 KiB) is written with a promise, and since a
/// connection writes in order, its completion means every byte before it has left too. A reader
/// that stops reading so stops the sender after one window (backpressure), and the mesh holds at
/// most about one window per stream. Calls under a batch never need a promise.
///
/// A stream keeps under one batch not given back (written onwards, but not a whole batch yet):
/// a connection's streams keep at most `max_concurrent_streams` batches that way, which
/// `callbacks.max_buffered_bytes` must leave room for, so that holding the connection's window
/// back never stalls streams whose next batch needs more of the caller's data.
public struct ForwardingWindow {
  /// A window with nothing received yet.
  @inlinable public init() {}

  /// Bytes given back at once.
  public static let batch = 64 * 1024
  @usableFromInline var unreturned = 0

  /// Counts a DATA frame; returns the bytes to give back once it has been written onwards, when
  /// a batch is due.
  @inlinable public mutating func received(_ data: HTTP2Frame.FramePayload.Data) -> Int? {
    unreturned += data.flowControlledLength
    guard unreturned >= Self.batch else { return nil }
    defer { unreturned = 0 }
    return unreturned
  }
}

extension HTTP2Frame.FramePayload.Data {
  /// The bytes this frame takes from the flow-control window: its data, padding and the
  /// padding's length byte (RFC 9113 §6.9.1).
  @inlinable public var flowControlledLength: Int {
    data.readableBytes + (paddingBytes.map { $0 + 1 } ?? 0)
  }
}
