import NIOCore

/// Follows the 5-byte gRPC message prefixes through DATA frames without copying the payload,
/// counting messages and refusing any larger than the limit.
///
/// Feed it each DATA frame's bytes in order with ``scan(_:)``.
public struct MessageFrameScanner: Sendable {
  /// Why a stream of messages is refused.
  public enum Failure: Error, Equatable, Sendable {
    /// A message's declared length is over the limit.
    case tooLarge(length: Int, limit: Int)
  }

  private let limit: Int
  /// Bytes still expected for the current message body.
  private var bodyRemaining = 0
  /// Prefix bytes read so far for the next message (0–4 while in a prefix).
  private var prefix: [UInt8] = []
  /// Messages whose prefix has been read.
  public private(set) var messagesStarted = 0

  /// Creates a scanner that refuses messages longer than `limit` bytes.
  public init(limit: Int) {
    self.limit = limit
    self.prefix.reserveCapacity(5)
  }

  /// Scans one frame's bytes; returns how many new messages began in it.
  public mutating func scan(_ buffer: ByteBuffer) throws(Failure) -> Int {
    var index = buffer.readerIndex
    let end = buffer.writerIndex
    var started = 0
    while index < end {
      if bodyRemaining > 0 {
        let take = min(bodyRemaining, end - index)
        bodyRemaining -= take
        index += take
        continue
      }
      prefix.append(buffer.getInteger(at: index, as: UInt8.self)!)
      index += 1
      if prefix.count == 5 {
        let length = Int(prefix[1]) << 24 | Int(prefix[2]) << 16 | Int(prefix[3]) << 8 | Int(prefix[4])
        prefix.removeAll(keepingCapacity: true)
        guard length <= limit else { throw .tooLarge(length: length, limit: limit) }
        bodyRemaining = length
        started += 1
        messagesStarted += 1
      }
    }
    return started
  }
}
