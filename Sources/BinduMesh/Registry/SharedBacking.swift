import Foundation

/// Whether an agent's config lets several cores share its work: Bindu scales out by cores that
/// pop tasks from one Redis queue and keep them in one Postgres database.
///
/// Bindu (2026.36) falls back to in-memory storage or scheduling, silently, for anything but
/// `storage: {type: postgres, postgres_url: …}` and `scheduler: {type: redis, …}`; a core with
/// in-memory storage on a shared queue takes tasks and loses them. A config that names neither
/// leaves it to each core's environment (`STORAGE_TYPE`, `DATABASE_URL`, `SCHEDULER_TYPE`,
/// `REDIS_URL`), which the mesh cannot see.
package enum SharedBacking: Sendable, Hashable {
  /// Both are shared.
  case shared
  /// The config names neither or only one; the cores' environment decides. Allowed, with this
  /// warning.
  case unknown(String)
  /// It cannot work with several cores, for this reason.
  case refused(String)

  /// Checks an agent's config JSON for registration with `cores` cores.
  package static func check(configJSON: String, cores: Int) -> SharedBacking {
    guard cores > 1 else { return .shared }
    let object = (try? JSONSerialization.jsonObject(with: Data(configJSON.utf8))) as? [String: Any] ?? [:]
    var unnamed: [String] = []
    switch object["storage"] {
    case nil:
      unnamed.append("storage (STORAGE_TYPE, DATABASE_URL)")
    case let storage as [String: Any]:
      let type = storage["type"] as? String
      guard type == "postgres" else {
        return .refused(
          "with \(cores) cores the agent needs shared storage, and its config names storage type "
            + "\"\(type ?? "none")\", which Bindu keeps in memory: tasks one core takes from the shared "
            + "queue would be lost to the others; use \"storage\": {\"type\": \"postgres\", \"postgres_url\": …}")
      }
      guard let url = storage["postgres_url"] as? String, !url.isEmpty else {
        return .refused(
          "with \(cores) cores the agent needs shared storage, and its config names postgres storage "
            + "without \"postgres_url\", which Bindu then keeps in memory: tasks would be lost")
      }
    default:
      return .refused("the agent config's \"storage\" is not an object")
    }
    switch object["scheduler"] {
    case nil:
      unnamed.append("scheduler (SCHEDULER_TYPE, REDIS_URL)")
    case let scheduler as [String: Any]:
      let type = scheduler["type"] as? String
      guard type == "redis" else {
        return .refused(
          "with \(cores) cores the agent needs a shared scheduler, and its config names scheduler type "
            + "\"\(type ?? "none")\", which Bindu runs in memory: each core would keep its own queue; "
            + "use \"scheduler\": {\"type\": \"redis\", \"redis_url\": …}")
      }
    default:
      return .refused("the agent config's \"scheduler\" is not an object")
    }
    guard unnamed.isEmpty else {
      return .unknown(
        "registered with \(cores) cores, the agent's config names no \(unnamed.joined(separator: " and no ")): "
          + "each core's environment decides, and a core with in-memory storage loses tasks")
    }
    return .shared
  }
}
