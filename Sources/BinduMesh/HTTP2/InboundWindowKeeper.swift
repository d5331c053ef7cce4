import NIOHTTP2

/// Gives a peer back the connection's flow-control window its DATA frames used, once half of
/// `target` is spent.
///
/// The mesh reads every frame as it arrives, so the connection's window is returned as soon as
/// the HTTP/2 handler reports it spent (``NIOHTTP2WindowUpdatedEvent``); each stream's window
/// comes back as its data is written onwards (``ForwardingWindow``), so one slow stream holds
/// back only itself.
struct InboundWindowKeeper {
  /// The window to restore.
  let target: Int

  /// The WINDOW_UPDATE to send after `event`, if one is due.
  func windowUpdate(after event: NIOHTTP2WindowUpdatedEvent) -> HTTP2Frame? {
    guard event.streamID == .rootStream, let size = event.inboundWindowSize, size <= target / 2 else { return nil }
    return HTTP2Frame(streamID: event.streamID, payload: .windowUpdate(windowSizeIncrement: target - size))
  }
}
