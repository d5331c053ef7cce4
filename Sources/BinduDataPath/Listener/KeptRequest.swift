import NIOHTTP2

/// A call's request frames, kept until a replica commits to an answer so the call can move to
/// another replica: the HEADERS, then the first frame after them in place (a unary request has
/// one DATA frame, so nothing is allocated for it), then any more in an array.
///
/// It alone answers when a call stops keeping its request, from what the call tells it:
/// - a frame while no replica has the request (``waiting(_:)``) is kept whatever its size: no
///   replica has it, so while a call waits for its replica ``isFull`` tells it to stop taking more;
/// - a frame a replica has (``forwarded(_:connectionOverBudget:)``) is kept to move the call
///   unless past `limit` (`retry.max_kept_request_bytes`), or unless the connection's calls keep
///   too much between them (`callbacks.max_buffered_bytes`): then every frame is dropped and the
///   call can no longer move;
/// - once the frames kept are written to a replica (``replicaHasAll()``), past `limit` they are
///   dropped (the connection's budget does not drop them: they are still in memory, queued for
///   the replica's window);
/// - once the replica commits to an answer, or the call ends (``keepNoMore()``), nothing is kept
///   any more.
struct KeptRequest {
  /// The most DATA bytes kept to move the call.
  let limit: Int
  private(set) var headers: HTTP2Frame.FramePayload.Headers?
  private var first: HTTP2Frame.FramePayload?
  private var rest: [HTTP2Frame.FramePayload] = []
  /// DATA bytes kept (padding excluded), or seen when ``canMove`` is false.
  private(set) var bytes = 0
  /// Whether the frames are all here, so the call can move to another replica.
  private(set) var canMove = true
  /// The replica committed to an answer: the call will not move, nothing is kept.
  private var committed = false

  init(limit: Int) { self.limit = limit }

  /// DATA bytes held now.
  var retained: Int { canMove ? bytes : 0 }

  /// A frame of the request (the HEADERS first) while no replica has the request: kept.
  mutating func waiting(_ payload: HTTP2Frame.FramePayload) { keep(payload, sent: false) }

  /// A frame of the request a replica has now: kept to move the call, unless over the limit or
  /// `connectionOverBudget` (the connection's calls keep `callbacks.max_buffered_bytes`).
  mutating func forwarded(_ payload: HTTP2Frame.FramePayload, connectionOverBudget: Bool) {
    keep(payload, sent: true, dropAll: connectionOverBudget)
  }

  /// The replica committed to an answer (its response HEADERS), or the call ended: nothing is
  /// kept from here on.
  mutating func keepNoMore() {
    removeAll()
    committed = true
  }

  private mutating func keep(_ payload: HTTP2Frame.FramePayload, sent: Bool, dropAll: Bool = false) {
    guard !committed else { return }
    if case .data(let data) = payload { bytes += data.data.readableBytes }
    guard canMove else { return }
    if headers == nil, case .headers(let frame) = payload {
      headers = frame
    } else if first == nil {
      first = payload
    } else {
      rest.append(payload)
    }
    if sent { dropIfOverLimit(dropAll: dropAll) }
  }

  /// A replica has every frame kept: past the limit they are dropped.
  mutating func replicaHasAll() { dropIfOverLimit(dropAll: false) }

  /// Whether a call with no replica yet should take no more of the request for now.
  var isFull: Bool { bytes >= limit }

  /// The frames after the HEADERS, in order.
  func forEachFrameAfterHeaders(_ body: (HTTP2Frame.FramePayload) -> Void) {
    guard let first else { return }
    body(first)
    rest.forEach(body)
  }

  /// Forgets every frame (the replica has committed, or the call ended).
  mutating func removeAll() {
    self = KeptRequest(limit: limit)
  }

  private mutating func dropIfOverLimit(dropAll: Bool) {
    guard canMove, bytes > limit || (dropAll && bytes > 0) else { return }
    let seen = bytes
    self = KeptRequest(limit: limit)
    bytes = seen
    canMove = false
  }
}
