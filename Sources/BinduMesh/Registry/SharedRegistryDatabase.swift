import BinduMeshConfig
import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// One connection to the shared registry's PostgreSQL database and the SQL the mesh runs on it:
/// the schema and its migrations, the full read, the writes and the notifications.
///
/// Tables (all named `bindu_mesh_*`, in the connection's default schema):
/// - `bindu_mesh_schema_migrations`: the versions applied, by whom and when;
/// - `bindu_mesh_pools`: each agent's definition, written once by the first mesh to take one of
///   its replicas;
/// - `bindu_mesh_members`: each registered replica with its membership id, the mesh it
///   registered at, and when a mesh last saw it alive (`last_seen`, by the database's clock).
///
/// Every change of membership is followed by `pg_notify('bindu_mesh_registry', <mesh id>)`.
struct SharedRegistryDatabase: Sendable {
  /// The channel every mesh listens on.
  static let channel = "bindu_mesh_registry"
  /// The schema version this mesh writes and reads.
  static let schemaVersion = 1

  let connection: PostgresConnection
  let meshID: String
  let logger: Logger

  /// The migrations, by version: each a list of statements run in one transaction.
  static let migrations: [Int: [PostgresQuery]] = [
    1: [
      """
      CREATE TABLE bindu_mesh_pools (
        agent text PRIMARY KEY, config_json text NOT NULL, skills text[] NOT NULL,
        written_by text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())
      """,
      """
      CREATE TABLE bindu_mesh_members (
        id text PRIMARY KEY, agent text NOT NULL, address text NOT NULL, registered_at text NOT NULL,
        joined_at timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now(),
        last_seen_by text NOT NULL)
      """,
      "CREATE INDEX bindu_mesh_members_agent ON bindu_mesh_members (agent)",
    ]
  ]

  /// Connects to `config`'s database.
  static func connect(_ config: MeshConfig.SharedRegistry, logger: Logger) async throws -> SharedRegistryDatabase {
    let tls: PostgresConnection.Configuration.TLS
    switch (config.url.tlsMode, config.tls) {
    case (.disable, nil): tls = .disable
    case (.prefer, nil): tls = .prefer(try Self.tlsContext(nil, verify: false))
    case (.require, nil): tls = .require(try Self.tlsContext(nil, verify: false))
    case (_, let files): tls = .require(try Self.tlsContext(files, verify: true))
    }
    var configuration = PostgresConnection.Configuration(
      host: config.url.host, port: config.url.port, username: config.url.user, password: config.url.password,
      database: config.url.database, tls: tls)
    configuration.options.connectTimeout = .seconds(5)
    configuration.options.tlsServerName = config.tls?.serverName
    let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
    return SharedRegistryDatabase(connection: connection, meshID: config.meshID, logger: logger)
  }

  /// `verify`: the server's certificate must chain to `files.ca` (or the system's roots) and
  /// name the host; without, it is not checked, as libpq's `prefer` and `require`.
  private static func tlsContext(_ files: MeshConfig.ClientTLS?, verify: Bool) throws -> NIOSSLContext {
    var configuration = TLSConfiguration.makeClientConfiguration()
    configuration.minimumTLSVersion = .tlsv12
    if !verify { configuration.certificateVerification = .none }
    if let ca = files?.ca { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) }
    if let certificate = files?.certificate, let key = files?.privateKey {
      configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
      configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
    }
    return try NIOSSLContext(configuration: configuration)
  }

  /// Closes the connection.
  func close() async { try? await connection.close() }

  /// Brings the schema to ``schemaVersion``, under an advisory lock so that meshes starting at
  /// once migrate it once. A database migrated by a newer mesh is refused.
  func migrate() async throws {
    try await connection.query("BEGIN", logger: logger)
    do {
      try await connection.query("SELECT pg_advisory_xact_lock(7236451)", logger: logger)
      try await connection.query(
        """
        CREATE TABLE IF NOT EXISTS bindu_mesh_schema_migrations (
          version int PRIMARY KEY, applied_by text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
        """, logger: logger)
      var current = 0
      for try await version in try await connection.query(
        "SELECT coalesce(max(version), 0) FROM bindu_mesh_schema_migrations", logger: logger
      ).decode(Int.self) {
        current = version
      }
      guard current <= Self.schemaVersion else {
        throw SharedRegistryError.newerSchema(current, known: Self.schemaVersion)
      }
      for version in (current + 1)...max(current + 1, Self.schemaVersion) where version <= Self.schemaVersion {
        for statement in Self.migrations[version] ?? [] { try await connection.query(statement, logger: logger) }
        try await connection.query(
          "INSERT INTO bindu_mesh_schema_migrations (version, applied_by) VALUES (\(version), \(meshID))", logger: logger)
        logger.notice("shared registry schema migrated", metadata: ["mesh.schema_version": "\(version)"])
      }
      try await connection.query("COMMIT", logger: logger)
    } catch {
      try? await connection.query("ROLLBACK", logger: logger)
      throw error
    }
  }

  /// Every pool and member.
  func read() async throws -> SharedRegistryRows {
    var pools: [SharedRegistryRows.Pool] = []
    for try await (agent, configJSON, skills) in try await connection.query(
      "SELECT agent, config_json, skills FROM bindu_mesh_pools", logger: logger
    ).decode((String, String, [String]).self) {
      pools.append(.init(agent: agent, configJSON: configJSON, skills: skills))
    }
    var members: [SharedRegistryRows.Member] = []
    for try await (id, agent, address, registeredAt, age) in try await connection.query(
      """
      SELECT id, agent, address, registered_at, greatest(extract(epoch FROM now() - last_seen), 0)::float8
      FROM bindu_mesh_members
      """, logger: logger
    ).decode((String, String, String, String, Double).self) {
      members.append(
        .init(id: id, agent: agent, address: address, registeredAt: registeredAt, age: .milliseconds(Int64(age * 1000))))
    }
    return SharedRegistryRows(pools: pools, members: members)
  }

  /// The definition of `agent` in the database, after writing `configJSON` and `skills` as its
  /// definition if it had none.
  func claimPool(agent: String, configJSON: String, skills: [String]) async throws -> (configJSON: String, skills: [String])? {
    try await write(.pool(agent: agent, configJSON: configJSON, skills: skills))
    for try await (config, skills) in try await connection.query(
      "SELECT config_json, skills FROM bindu_mesh_pools WHERE agent = \(agent)", logger: logger
    ).decode((String, [String]).self) {
      return (config, skills)
    }
    return nil
  }

  /// Runs one write.
  func write(_ write: SharedRegistryWrite) async throws {
    switch write {
    case .pool(let agent, let configJSON, let skills):
      try await connection.query(
        """
        INSERT INTO bindu_mesh_pools (agent, config_json, skills, written_by) VALUES (\(agent), \(configJSON), \(skills), \(meshID))
        ON CONFLICT (agent) DO NOTHING
        """, logger: logger)
    case .member(let id, let agent, let address):
      try await connection.query(
        """
        INSERT INTO bindu_mesh_members (id, agent, address, registered_at, last_seen_by)
        VALUES (\(id), \(agent), \(address), \(meshID), \(meshID))
        ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, last_seen = now(), last_seen_by = EXCLUDED.last_seen_by
        """, logger: logger)
    case .remove(let id):
      try await connection.query("DELETE FROM bindu_mesh_members WHERE id = \(id)", logger: logger)
    case .evict(let id, let timeout):
      let seconds = timeout.secondsValue
      try await connection.query(
        "DELETE FROM bindu_mesh_members WHERE id = \(id) AND last_seen < now() - make_interval(secs => \(seconds))",
        logger: logger)
    }
  }

  /// Records that this mesh saw `ids` alive now.
  func recordSightings(_ ids: [String]) async throws {
    guard !ids.isEmpty else { return }
    try await connection.query(
      "UPDATE bindu_mesh_members SET last_seen = now(), last_seen_by = \(meshID) WHERE id = ANY(\(ids))", logger: logger)
  }

  /// Tells the other meshes that the registry changed.
  func notify() async throws {
    try await connection.query("SELECT pg_notify(\(Self.channel), \(meshID))", logger: logger)
  }
}

/// A change this mesh writes to the shared registry.
enum SharedRegistryWrite: Sendable, Hashable {
  /// A pool's definition (kept when the pool has one already).
  case pool(agent: String, configJSON: String, skills: [String])
  /// A replica joined.
  case member(id: String, agent: String, address: String)
  /// A replica left.
  case remove(id: String)
  /// A replica this mesh has not seen for `timeout`: deleted unless a mesh saw it since.
  case evict(id: String, timeout: Duration)

  /// The member it adds, if any.
  var added: String? { if case .member(let id, _, _) = self { id } else { nil } }
  /// The member it removes, if any.
  var removed: String? {
    switch self {
    case .remove(let id), .evict(let id, _): id
    default: nil
    }
  }
}

/// What stops the shared registry.
enum SharedRegistryError: Error, CustomStringConvertible {
  case newerSchema(Int, known: Int)

  var description: String {
    switch self {
    case .newerSchema(let found, let known):
      "the shared registry's schema is version \(found), written by a newer bindu-mesh; this one knows \(known)"
    }
  }
}
