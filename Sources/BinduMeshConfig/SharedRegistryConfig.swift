import Foundation

extension MeshConfig {
  /// A registry shared by several meshes in PostgreSQL (`registry.postgres_url` in YAML).
  package struct SharedRegistry: Sendable, Hashable {
    /// The database.
    package var url: PostgresURL
    /// This mesh's name in the shared registry: what it writes is marked with it, and it ignores
    /// its own notifications. Default: the host name.
    package var meshID: String
    /// TLS to the database (`registry.postgres_tls`); `nil`: as the URL's `sslmode` says.
    package var tls: ClientTLS?
    /// The host name or address at which the other meshes reach this host
    /// (`registry.advertise_host`): a replica of this host that registers over loopback with a
    /// loopback or wildcard callback (`localhost:PORT`, as the SDKs send) is recorded at
    /// `advertise_host:PORT`, by this mesh and the others. `nil` (the default): recorded as sent,
    /// with a warning, since each other mesh would dial that address on its own host.
    package var advertiseHost: String?
    /// Where `postgres_url` was read (file, line, key), for what is found wrong with it at start
    /// (bad credentials, no such database).
    package var origin: ConfigError

    /// A shared registry at `url`.
    package init(
      url: PostgresURL, meshID: String = Self.defaultMeshID, tls: ClientTLS? = nil, advertiseHost: String? = nil,
      origin: ConfigError? = nil
    ) {
      self.url = url
      self.advertiseHost = advertiseHost
      self.meshID = meshID
      self.tls = tls
      self.origin = origin ?? ConfigError(source: "config", key: "registry.postgres_url", message: "")
    }

    /// The host name, or `bindu-mesh` when it has none.
    package static var defaultMeshID: String {
      let name = ProcessInfo.processInfo.hostName
      return name.isEmpty ? "bindu-mesh" : name
    }
  }

  /// A PostgreSQL URL: `postgres://user:password@host:5432/database?sslmode=prefer`.
  package struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    /// How the connection uses TLS (`sslmode`).
    package enum TLSMode: String, Sendable, Hashable {
      /// Plaintext.
      case disable
      /// TLS when the server offers it (the default, as libpq's).
      case prefer
      /// TLS or no connection; the server's certificate is not verified (as libpq's `require`)
      /// unless `registry.postgres_tls` is set.
      case require
      /// TLS with the server's certificate verified against `registry.postgres_tls.ca` or the
      /// system's roots (`verify-ca`, `verify-full`).
      case verify
    }

    /// The server's host.
    package var host: String
    /// Its port. Default 5432.
    package var port: Int
    /// The role.
    package var user: String
    /// Its password, if any.
    package var password: String?
    /// The database. Default: the user's name.
    package var database: String
    /// TLS.
    package var tlsMode: TLSMode

    /// Parses `text`; `nil`-free: throws a reason that says what is wrong.
    package init(parsing text: String) throws(Invalid) {
      guard let components = URLComponents(string: text), let scheme = components.scheme,
        ["postgres", "postgresql"].contains(scheme)
      else {
        throw Invalid(reason: "expected postgres://user:password@host:port/database, got \"\(Self.redacted(text))\"")
      }
      guard let host = components.host, !host.isEmpty else { throw Invalid(reason: "the URL names no host") }
      guard let user = components.user, !user.isEmpty else { throw Invalid(reason: "the URL names no user") }
      let port = components.port ?? 5432
      guard (1...65535).contains(port) else { throw Invalid(reason: "port \(port) is not 1-65535") }
      self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
      self.port = port
      self.user = user.removingPercentEncoding ?? user
      self.password = components.password.map { $0.removingPercentEncoding ?? $0 }
      let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
      self.database = path.isEmpty ? self.user : (path.removingPercentEncoding ?? path)
      self.tlsMode = .prefer
      for item in components.queryItems ?? [] {
        switch item.name {
        case "sslmode":
          switch item.value ?? "" {
          case "disable": tlsMode = .disable
          case "allow", "prefer": tlsMode = .prefer
          case "require": tlsMode = .require
          case "verify-ca", "verify-full": tlsMode = .verify
          default: throw Invalid(reason: "sslmode \"\(item.value ?? "")\" is not disable, prefer, require, verify-ca or verify-full")
          }
        default:
          throw Invalid(reason: "unknown URL parameter \"\(item.name)\" (expected sslmode)")
        }
      }
    }

    /// The URL without its password, for logs and status.
    package var description: String {
      let host = self.host.contains(":") ? "[\(self.host)]" : self.host
      return "postgres://\(user)@\(host):\(port)/\(database)"
    }

    private static func redacted(_ text: String) -> String {
      guard let at = text.lastIndex(of: "@"), let scheme = text.range(of: "://"), scheme.upperBound < at else { return text }
      let credentials = text[scheme.upperBound..<at]
      guard let colon = credentials.firstIndex(of: ":") else { return text }
      return String(text[..<colon]) + ":***" + String(text[at...])
    }

    /// Why a URL cannot be used.
    package struct Invalid: Error, Hashable, Sendable {
      /// What is wrong.
      package var reason: String
    }
  }
}
