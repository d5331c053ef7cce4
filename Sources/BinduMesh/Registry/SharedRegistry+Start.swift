import BinduMeshConfig
import Logging
import PostgresNIO

extension SharedRegistry {
  // MARK: Start

  /// Connects once at start: bad credentials or a missing database stop the start with the
  /// config's file, line and key; an unreachable server does not (the mesh serves from its
  /// state file and connects later).
  static func check(_ config: MeshConfig.SharedRegistry, logger: Logger) async throws {
    do {
      let database = try await withTimeout(.seconds(5)) { try await SharedRegistryDatabase.connect(config, logger: logger) }
      await database.close()
    } catch let error as PSQLError where isRefusal(error.serverInfo?[.sqlState]) {
      var refusal = config.origin
      refusal.message = "\(config.url) refused the connection: \(describe(error))"
      throw refusal
    } catch {
      logger.warning(
        "shared registry unreachable at start: serving from the state file until it answers",
        metadata: ["mesh.database": "\(config.url)", "error": "\(describe(error))"])
    }
  }

  /// Whether a server's SQLSTATE says it will not take this mesh however long it waits: bad
  /// credentials (class 28) or no such database (3D000). A server starting up (57P03) is not.
  static func isRefusal(_ sqlState: String?) -> Bool {
    guard let sqlState else { return false }
    return sqlState.hasPrefix("28") || sqlState == "3D000"
  }

  /// A database error in one line: the server's message and SQLSTATE when it sent one.
  static func describe(_ error: any Error) -> String {
    if let error = error as? PSQLError, let info = error.serverInfo, let message = info[.message] {
      return "\(message) (SQLSTATE \(info[.sqlState] ?? "?"))"
    }
    return "\(error)"
  }
}

/// The notifications of a connection ended (it closed).
struct PostgresNotificationEnded: Error {}
/// The database did not answer a round of work in time.
struct SharedRegistryStalled: Error, CustomStringConvertible {
  var description: String { "the database did not answer within \(SharedRegistry.stallTimeout)" }
}
/// ``withTimeout(_:_:)`` ran out of time.
struct TimedOut: Error, CustomStringConvertible {
  var description: String { "no answer in time" }
}

/// Runs `body`, throwing when it has not finished within `timeout`.
func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
  try await withThrowingTaskGroup(of: T.self) { group in
    group.addTask { try await body() }
    group.addTask {
      try await Task.sleep(for: timeout)
      throw TimedOut()
    }
    defer { group.cancelAll() }
    return try await group.next()!
  }
}
