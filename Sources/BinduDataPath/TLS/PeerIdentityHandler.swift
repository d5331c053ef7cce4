import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// After a TLS handshake, checks the peer's certificate against an identity allow-list and
/// closes the connection when it names none of them; logs every failed handshake with the
/// peer's address, so refusals (no certificate, another CA, expired, plaintext) are visible.
package final class PeerIdentityHandler: ChannelInboundHandler {
  package typealias InboundIn = NIOAny

  private let allowed: [String]
  private let logger: Logger
  private let peerRole: String

  /// - Parameter peerRole: `caller` or `replica`, for the log lines.
  package init(allowed: [String], peerRole: String, logger: Logger) {
    self.allowed = allowed
    self.peerRole = peerRole
    self.logger = logger
  }

  package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case TLSUserEvent.handshakeCompleted = event, !allowed.isEmpty {
      let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate
      let identity = certificate.flatMap { try? PeerIdentity(derEncoded: $0.toDERBytes()) }
      guard let identity, identity.isAllowed(by: allowed) else {
        PeerIdentity.logRefusal(
          identity, peer: context.channel.remoteAddress?.description ?? "?", role: peerRole, allowed: allowed,
          logger: logger)
        context.close(promise: nil)
        return
      }
    }
    context.fireUserInboundEventTriggered(event)
  }

  package func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError {
      logger.warning(
        "TLS handshake with \(peerRole) failed",
        metadata: ["mesh.peer": "\(context.channel.remoteAddress?.description ?? "?")", "error": "\(error)"])
      context.close(promise: nil)
      return
    }
    context.fireErrorCaught(error)
  }
}
