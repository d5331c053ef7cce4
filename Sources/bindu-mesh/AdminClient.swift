import BinduMesh
import BinduMeshConfig
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Requests to a running mesh's admin listener, for the subcommands that talk to it: one
/// HTTP/1.1 request on a connection of its own, over swift-nio (as the mesh serves it).
enum AdminClient {
  /// Sends `method path` to `admin` (host:port), with `token` as a bearer token when given; the
  /// status code and the body.
  static func send(_ method: String, _ path: String, admin: String, token: String? = nil) async throws -> (Int, Data) {
    guard let address = HostPort(parsing: admin) else { throw AdminClientError("not host:port: \(admin)") }
    do {
      return try await exchange(method, path, host: address.host, port: address.port, authority: admin, token: token)
    } catch {
      throw AdminClientError("cannot reach the mesh's admin listener at \(admin): \(describe(error))")
    }
  }

  /// A connection failure as a person reads it ("Connection refused").
  private static func describe(_ error: any Error) -> String {
    if let failed = error as? NIOConnectionError, let last = failed.connectionErrors.last?.error { return describe(last) }
    if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
    return "\(error)"
  }

  private static func exchange(
    _ method: String, _ path: String, host: String, port: Int, authority: String, token: String?
  ) async throws -> (Int, Data) {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .connectTimeout(.seconds(10))
      .connect(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
          return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
        }
      }
    return try await channel.executeThenClose { inbound, outbound in
      var headers = HTTPHeaders([("Host", authority), ("Connection", "close"), ("Content-Length", "0")])
      if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
      let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path, headers: headers)
      try await outbound.write(.head(head))
      try await outbound.write(.end(nil))
      var status = 0
      var body = Data()
      for try await part in inbound {
        switch part {
        case .head(let response): status = Int(response.status.code)
        case .body(let buffer): body.append(contentsOf: buffer.readableBytesView)
        case .end: return (status, body)
        }
      }
      throw AdminClientError("the connection closed before the answer was whole")
    }
  }
}

/// A failure of a subcommand that talks to the admin listener, printed as it is.
struct AdminClientError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
