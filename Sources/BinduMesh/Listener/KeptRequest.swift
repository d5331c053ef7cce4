import NIOHTTP2

/// A call's request frames, kept until a replica commits to an answer so the call can move to
/// another replica: the HEADERS, then the first frame after them in place (a unary request has
/// one DATA frame, so nothing is allocated for it), then any more in an array.
///
/// What it keeps is bounded by `limit` (`retry.max_kept_request_bytes`) once a replica has the
/// frames: past it they are dropped and the call can no longer move; so are they when the
/// connection's calls keep too much between them (`callbacks.max_buffered_bytes`, the `dropAll`
/// of ``keep(_:sent:dropAll:)``). Frames no replica has yet must stay, so
/// while a call waits for its replica ``isFull`` tells it to stop taking more.
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

  init(limit: Int) { self.limit = limit }

  /// DATA bytes held now.
  var retained: Int { canMove ? bytes : 0 }

  /// Keeps `payload`: the HEADERS first, then the frames that follow. `sent`: a replica has it
  /// already, so it may be dropped once over the limit, or at once with `dropAll`.
  mutating func keep(_ payload: HTTP2Frame.FramePayload, sent: Bool, dropAll: Bool = false) {
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
  mutating func sent() { dropIfOverLimit(dropAll: false) }

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
