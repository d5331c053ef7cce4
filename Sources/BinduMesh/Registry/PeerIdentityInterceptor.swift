import BinduDataPath
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import X509

/// Refuses registry calls whose TLS client certificate names no identity of the allow-list
/// (`registry.tls.allowed_identities`), with `PERMISSION_DENIED` and a log line.
struct PeerIdentityInterceptor: ServerInterceptor {
  let allowed: [String]
  let logger: Logger

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    guard !allowed.isEmpty else { return try await next(request, context) }
    let certificate = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate
    let identity = try certificate.map { try PeerIdentity(certificate: $0) }
    guard let identity, identity.isAllowed(by: allowed) else {
      PeerIdentity.logRefusal(identity, peer: context.remotePeer, role: "registrant", allowed: allowed, logger: logger)
      throw RPCError(code: .permissionDenied, message: "client certificate names no allowed identity")
    }
    return try await next(request, context)
  }
}

