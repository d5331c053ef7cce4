import Foundation

/// What the admin listener shows of the mesh: `/status` (JSON, and what `bindu-mesh status`
/// reads), the status page at `/`, and `/pools` (the pools alone).
public struct StatusReport: Codable, Sendable {
  /// The mesh's version.
  public var version: String
  /// When the report was made.
  public var generatedAt: Date
  /// Whether the mesh is ready (as `/readyz`), and why not.
  public var ready: Bool
  public var notReady: [String]
  public var pools: [PoolView]
  /// Every certificate the mesh uses, with its expiry.
  public var certificates: [CertificateView]
  /// The registry shared with other meshes in PostgreSQL; `nil`: none (the state file alone).
  public var sharedRegistry: SharedRegistryView?
  /// The last log lines at `notice` or above, newest first.
  public var events: [EventRing.Event]
}

/// One pool.
public struct PoolView: Codable, Sendable {
  public var agent: String
  public var declared: Bool
  public var callbackListen: String
  public var callbackAddress: String
  /// Whether a core knows the agent.
  public var registeredWithCore: Bool
  /// Times the cores accepted it, in all.
  public var coreRegistrations: Int
  /// The DID and agent URL of the first core that accepted it.
  public var did: String?
  public var agentURL: String?
  /// Each core's registration.
  public var cores: [CoreView]
  public var callsInFlight: Int
  /// Calls waiting in the pool's queue (`balancer.max_concurrent_calls`).
  public var queuedCalls: Int
  public var ready: Bool
  public var notReadyReason: String?
  /// What may not work as meant (the agent's storage left to the cores' environment).
  public var warnings: [String]
  public var endpoints: [EndpointView]
}

/// A pool's registration with one core.
public struct CoreView: Codable, Sendable {
  public var core: String
  public var registered: Bool
  /// Times this core accepted the agent (more than 1: it restarted).
  public var registrations: Int
  /// Since when this core has known the agent without a break.
  public var registeredSince: Date?
  public var did: String?
  public var agentURL: String?
  public var lastError: String?
}

/// One endpoint of a pool.
public struct EndpointView: Codable, Sendable {
  public var address: String
  /// `configured`, `registered` or `dns`.
  public var origin: String
  /// `healthy`, `unhealthy`, `pending`, `ejected` or `draining` (by hand).
  public var state: String
  /// Whether the balancer may pick it now.
  public var inRotation: Bool
  /// Calls it has now.
  public var callsInFlight: Int
  public var ejections: Int
  public var lastProbe: ProbeView?
  /// A registered replica's membership id.
  public var member: String?
  /// What last showed a registered replica alive: `joined`, `heartbeat` or `probe`.
  public var liveness: String?
  /// Its calls over the last minute.
  public var lastMinute: CallsView
}

/// An endpoint's calls over the last minute (each attempt, retries included).
public struct CallsView: Codable, Sendable {
  public var calls: Int
  public var failures: Int
  public var callsPerSecond: Double
  /// The share of calls that ended OK; `nil` with no call.
  public var successRate: Double?
  /// Call time percentiles in seconds; `nil` with no call.
  public var p50Seconds: Double?
  public var p99Seconds: Double?
}

/// The last health probe of an endpoint.
public struct ProbeView: Codable, Sendable {
  public var secondsAgo: Double
  public var passed: Bool
  public var message: String
}

/// A certificate in use.
public struct CertificateView: Codable, Sendable {
  /// What it is for: `callback:<agent>`, `upstream:<agent>`, `callbacks`, `callbacks-upstream`,
  /// `registry` or `core`.
  public var use: String
  public var notAfter: Date
  /// Days until it expires (negative: expired).
  public var daysLeft: Double
}

extension StatusReport {
  /// The JSON encoder of `/status` and `/pools`: snake_case keys, ISO 8601 dates.
  public static func encoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.dateEncodingStrategy = .iso8601
    return encoder
  }

  /// The decoder for what ``encoder()`` writes (`agent_url` back to `agentURL`).
  public static func decoder() -> JSONDecoder {
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
public struct SharedRegistryView: Codable, Sendable, Hashable {
  /// The database, without its password.
  public var database: String
  /// This mesh's id there.
  public var meshID: String
  /// Whether the mesh is connected and has read it.
  public var up: Bool
  /// Seconds since its last full read; `nil` before the first.
  public var lagSeconds: Double?
  /// Changes waiting to be written.
  public var pendingWrites: Int
  /// Writes that failed (and were tried again).
  public var writeErrors: Int
  /// The last connection error.
  public var lastError: String?
}
