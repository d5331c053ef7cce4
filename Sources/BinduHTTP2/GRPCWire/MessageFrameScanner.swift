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
  /// The prefix bytes read so far for the next message, and how many (0–4 while in a prefix).
  private var prefix: UInt64 = 0
  private var prefixCount = 0
  /// Messages whose prefix has been read.
  public private(set) var messagesStarted = 0
  /// Messages read whole.
  public private(set) var messagesEnded = 0

  /// Creates a scanner that refuses messages longer than `limit` bytes.
  public init(limit: Int) {
    self.limit = limit
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
        if bodyRemaining == 0 { messagesEnded += 1 }
        continue
      }
      prefix = prefix << 8 | UInt64(buffer.getInteger(at: index, as: UInt8.self)!)
      prefixCount += 1
      index += 1
      if prefixCount == 5 {
        // The flag byte is above bit 32; the length is the low four bytes.
        let length = Int(prefix & 0xFFFF_FFFF)
        prefix = 0
        prefixCount = 0
        guard length <= limit else { throw .tooLarge(length: length, limit: limit) }
        bodyRemaining = length
        started += 1
        messagesStarted += 1
        if length == 0 { messagesEnded += 1 }
      }
    }
    return started
  }
}
