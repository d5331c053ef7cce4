import Foundation

/// What the admin listener shows of the mesh: `/status` (JSON, and what `bindu-mesh status`
/// reads), the status page at `/`, and `/pools` (the pools alone).
package struct StatusReport: Codable, Sendable {
  /// The mesh's version.
  package var version: String
  /// When the report was made.
  package var generatedAt: Date
  /// Whether the mesh is ready (as `/readyz`), and why not.
  package var ready: Bool
  package var notReady: [String]
  package var pools: [PoolView]
  /// Every certificate the mesh uses, with its expiry.
  package var certificates: [CertificateView]
  /// The registry shared with other meshes in PostgreSQL; `nil`: none (the state file alone).
  package var sharedRegistry: SharedRegistryView?
  /// The last log lines at `notice` or above, newest first.
  package var events: [EventRing.Event]
}

/// One pool.
package struct PoolView: Codable, Sendable {
  package var agent: String
  package var declared: Bool
  package var callbackListen: String
  package var callbackAddress: String
  /// Whether a core knows the agent.
  package var registeredWithCore: Bool
  /// Times the cores accepted it, in all.
  package var coreRegistrations: Int
  /// The DID and agent URL of the first core that accepted it.
  package var did: String?
  package var agentURL: String?
  /// Each core's registration.
  package var cores: [CoreView]
  package var callsInFlight: Int
  /// Calls waiting in the pool's queue (`balancer.max_concurrent_calls`).
  package var queuedCalls: Int
  package var ready: Bool
  package var notReadyReason: String?
  /// What may not work as meant (the agent's storage left to the cores' environment).
  package var warnings: [String]
  package var endpoints: [EndpointView]
}

/// A pool's registration with one core.
package struct CoreView: Codable, Sendable {
  package var core: String
  package var registered: Bool
  /// Times this core accepted the agent (more than 1: it restarted).
  package var registrations: Int
  /// Since when this core has known the agent without a break.
  package var registeredSince: Date?
  package var did: String?
  package var agentURL: String?
  package var lastError: String?
}

/// One endpoint of a pool.
package struct EndpointView: Codable, Sendable {
  package var address: String
  /// `configured`, `registered` or `dns`.
  package var origin: String
  /// `healthy`, `unhealthy`, `pending`, `ejected` or `draining` (by hand).
  package var state: String
  /// Whether the balancer may pick it now.
  package var inRotation: Bool
  /// Calls it has now.
  package var callsInFlight: Int
  package var ejections: Int
  package var lastProbe: ProbeView?
  /// A registered replica's membership id.
  package var member: String?
  /// What last showed a registered replica alive: `joined`, `heartbeat` or `probe`.
  package var liveness: String?
  /// Its calls over the last minute.
  package var lastMinute: CallsView
}

/// An endpoint's calls over the last minute (each attempt, retries included).
package struct CallsView: Codable, Sendable {
  package var calls: Int
  package var failures: Int
  package var callsPerSecond: Double
  /// The share of calls that ended OK; `nil` with no call.
  package var successRate: Double?
  /// Call time percentiles in seconds; `nil` with no call.
  package var p50Seconds: Double?
  package var p99Seconds: Double?
}

/// The last health probe of an endpoint.
package struct ProbeView: Codable, Sendable {
  package var secondsAgo: Double
  package var passed: Bool
  package var message: String
}

/// A certificate in use.
package struct CertificateView: Codable, Sendable {
  /// What it is for: `callback:<agent>`, `upstream:<agent>`, `callbacks`, `callbacks-upstream`,
  /// `registry` or `core`.
  package var use: String
  package var notAfter: Date
  /// Days until it expires (negative: expired).
  package var daysLeft: Double
}

extension StatusReport {
  /// The JSON encoder of `/status` and `/pools`: snake_case keys, ISO 8601 dates.
  package static func encoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.dateEncodingStrategy = .iso8601
    return encoder
  }

  /// The decoder for what ``encoder()`` writes (`agent_url` back to `agentURL`).
  package static func decoder() -> JSONDecoder {
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .custom { path in
      let words = path[path.count - 1].stringValue.split(separator: "_")
      let name = words.enumerated().map { index, word in
        index == 0 ? String(word) : word == "url" ? "URL" : word.prefix(1).uppercased() + word.dropFirst()
      }.joined()
      return SnakeCaseKey(stringValue: name)
    }
    decoder.dateDecodingStrategy = .iso8601
    return decoder
  }
}

private struct SnakeCaseKey: CodingKey {
  var stringValue: String
  var intValue: Int? { nil }
  init(stringValue: String) { self.stringValue = stringValue }
  init?(intValue: Int) { nil }
}

/// The shared registry, as `/status` shows it.
package struct SharedRegistryView: Codable, Sendable, Hashable {
  /// The database, without its password.
  package var database: String
  /// This mesh's id there.
  package var meshID: String
  /// Whether the mesh is connected and has read it.
  package var up: Bool
  /// Seconds since its last full read; `nil` before the first.
  package var lagSeconds: Double?
  /// Changes waiting to be written.
  package var pendingWrites: Int
  /// Writes that failed (and were tried again).
  package var writeErrors: Int
  /// The last connection error.
  package var lastError: String?
}
