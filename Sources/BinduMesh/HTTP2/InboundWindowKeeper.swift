import NIOHTTP2

/// Gives a peer back the flow-control window its DATA frames used, for each stream and for the
/// connection, once half of `target` is spent.
///
/// The mesh reads every frame as it arrives and passes it on, so the window is returned as
/// soon as the HTTP/2 handler reports it spent (``NIOHTTP2WindowUpdatedEvent``).
struct InboundWindowKeeper {
  /// The window to restore.
  let target: Int

  /// The WINDOW_UPDATE to send after `event`, if one is due.
  func windowUpdate(after event: NIOHTTP2WindowUpdatedEvent) -> HTTP2Frame? {
    guard let size = event.inboundWindowSize, size <= target / 2 else { return nil }
    return HTTP2Frame(streamID: event.streamID, payload: .windowUpdate(windowSizeIncrement: target - size))
  }
}
