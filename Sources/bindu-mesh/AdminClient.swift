import Foundation

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// Requests to a running mesh's admin listener, for the subcommands that talk to it.
enum AdminClient {
  /// Sends `method path` to `admin` (host:port), with `token` as a bearer token when given; the
  /// status code and the body.
  static func send(_ method: String, _ path: String, admin: String, token: String? = nil) async throws -> (Int, Data) {
    guard let url = URL(string: "http://\(admin)\(path)") else { throw AdminClientError("not a URL: http://\(admin)\(path)") }
    var request = URLRequest(url: url)
    request.httpMethod = method
    if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
    do {
      let (data, response) = try await URLSession.shared.data(for: request)
      return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    } catch {
      throw AdminClientError("cannot reach the mesh's admin listener at \(admin): \(error.localizedDescription)")
    }
  }
}

/// A failure of a subcommand that talks to the admin listener, printed as it is.
struct AdminClientError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
