import NIOHTTP2

/// A call's request frames, kept until a replica commits to an answer so the call can move to
/// another replica: the HEADERS, then the first frame after them in place (a unary request has
/// one DATA frame, so nothing is allocated for it), then any more in an array.
struct KeptRequest {
  private(set) var headers: HTTP2Frame.FramePayload.Headers?
  private var first: HTTP2Frame.FramePayload?
  private var rest: [HTTP2Frame.FramePayload] = []

  /// Keeps `payload`: the HEADERS first, then the frames that follow.
  mutating func keep(_ payload: HTTP2Frame.FramePayload) {
    if headers == nil, case .headers(let frame) = payload {
      headers = frame
    } else if first == nil {
      first = payload
    } else {
      rest.append(payload)
    }
  }

  /// The frames after the HEADERS, in order.
  func forEachFrameAfterHeaders(_ body: (HTTP2Frame.FramePayload) -> Void) {
    guard let first else { return }
    body(first)
    rest.forEach(body)
  }

  /// Forgets every frame.
  mutating func removeAll() {
    self = KeptRequest()
  }
}
