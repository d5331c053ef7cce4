import Foundation
import Logging
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

/// The status page's figures and texts without sockets: the last-minute window, the event ring,
/// the JSON round trip and the renderings.
@Suite struct StatusTests {
  @Test func windowCountsCallsAndFailuresOfTheLastMinute() {
    var window = CallWindow()
    for second in Int64(100)..<110 {
      window.add(second: second, micros: 2_000, ok: true)
      window.add(second: second, micros: 2_000, ok: second != 105)
    }
    let now = window.summary(at: 110)
    #expect(now.calls == 20)
    #expect(now.failures == 1)
    #expect(now.successRate == 19.0 / 20.0)
    #expect(now.callsPerSecond == 20.0 / 60.0)
    // 59 seconds after the last call it still counts; one more and it has left the window.
    #expect(window.summary(at: 168).calls == 2)
    #expect(window.summary(at: 169).calls == 0)
    #expect(window.summary(at: 169).successRate == nil)
    #expect(window.summary(at: 169).p50 == nil)
  }

  @Test func aSlotReusedAMinuteLaterForgetsItsOldCalls() {
    var window = CallWindow()
    window.add(second: 5, micros: 1_000, ok: false)
    window.add(second: 65, micros: 1_000, ok: true)  // the same slot, a minute on
    let summary = window.summary(at: 65)
    #expect(summary.calls == 1)
    #expect(summary.failures == 0)
  }

  @Test func percentilesFollowTheCallTimes() throws {
    var window = CallWindow()
    for _ in 0..<98 { window.add(second: 1, micros: 3_000, ok: true) }
    for _ in 0..<2 { window.add(second: 1, micros: 900_000, ok: true) }
    let summary = window.summary(at: 1)
    let p50 = try #require(summary.p50)
    let p99 = try #require(summary.p99)
    // Within the bucket that holds the value (buckets grow 1.6 times).
    #expect(p50 > 0.003 / 1.6 && p50 <= 0.003 * 1.6)
    #expect(p99 > 0.9 / 1.6 && p99 <= 0.9 * 1.6)
  }

  @Test func bucketsCoverEveryCallTime() {
    #expect(CallWindow.bucket(0) == 0)
    #expect(CallWindow.bucket(250) == 0)
    #expect(CallWindow.bucket(251) == 1)
    #expect(CallWindow.bounds.last! > 60_000_000)
    #expect(CallWindow.bucket(Int.max) == CallWindow.bounds.count)
    #expect(CallWindow.quantile(0.99, of: [0] + Array(repeating: 0, count: CallWindow.bounds.count - 1) + [5], count: 5)
      == Double(CallWindow.bounds.last!) / 1_000_000)
  }

  @Test func eventRingKeepsTheNewestInOrder() {
    var ring = EventRing()
    for index in 0..<(EventRing.capacity + 5) {
      ring.append(.init(at: Date(timeIntervalSince1970: Double(index)), level: "notice", pool: nil, message: "\(index)", detail: ""))
    }
    let events = ring.newestFirst
    #expect(events.count == EventRing.capacity)
    #expect(events.first?.message == "\(EventRing.capacity + 4)")
    #expect(events.last?.message == "5")
  }

  @Test func eventsComeFromNoticeAndAboveWhateverTheLogLevel() {
    let events = RecentEvents()
    var logger = events.recording(Logger(label: "test"))
    logger.logLevel = .error
    logger[metadataKey: "mesh.pool"] = "agent"
    logger.info("not an event")
    logger.notice("replica in rotation", metadata: ["mesh.replica": "127.0.0.1:1"])
    logger.warning("replica ejected: calls keep failing")
    let recorded = events.newestFirst
    #expect(recorded.map(\.message) == ["replica ejected: calls keep failing", "replica in rotation"])
    #expect(recorded.allSatisfy { $0.pool == "agent" })
    #expect(recorded.last?.detail == "mesh.replica=127.0.0.1:1")
  }

  @Test func reportRoundTripsThroughItsJSON() throws {
    let report = Self.report()
    let data = try StatusReport.encoder().encode(report)
    let text = String(decoding: data, as: UTF8.self)
    #expect(text.contains("\"agent_url\""))
    #expect(text.contains("\"in_rotation\""))
    let decoded = try StatusReport.decoder().decode(StatusReport.self, from: data)
    #expect(decoded.pools.first?.agentURL == "http://localhost:3773")
    #expect(decoded.pools.first?.cores.first?.agentURL == "http://localhost:3773")
    #expect(decoded.pools.first?.endpoints.map(\.inRotation) == [true, false])
    #expect(decoded.events.first?.message == report.events.first?.message)
  }

  @Test func tableAndPageShowEachEndpointAndEscapeText() {
    let report = Self.report()
    let table = StatusTable.render(report, admin: "127.0.0.1:9775")
    let rows = table.split(separator: "\n").map(String.init)
    let dead = rows.first { $0.contains("127.0.0.1:5002") }
    #expect(dead?.contains("ejected") == true)
    #expect(rows.contains { $0.hasPrefix("  ENDPOINT") })
    #expect(table.contains("100.00%"))
    let page = StatusPage.html(report)
    #expect(page.contains("data-address=\"127.0.0.1:5002\" data-state=\"ejected\" data-in-rotation=\"false\""))
    #expect(page.contains("&lt;script&gt;"))
    #expect(!page.contains("<script"))
  }

  static func report() -> StatusReport {
    let calls = CallsView(calls: 6, failures: 0, callsPerSecond: 0.1, successRate: 1, p50Seconds: 0.002, p99Seconds: 0.004)
    let none = CallsView(calls: 0, failures: 0, callsPerSecond: 0, successRate: nil, p50Seconds: nil, p99Seconds: nil)
    return StatusReport(
      version: "test", generatedAt: Date(timeIntervalSince1970: 1_800_000_000), ready: true, notReady: [],
      pools: [
        PoolView(
          agent: "echo-agent", declared: false, callbackListen: "127.0.0.1:3776", callbackAddress: "127.0.0.1:3776",
          registeredWithCore: true, coreRegistrations: 1, did: "did:bindu:x", agentURL: "http://localhost:3773",
          cores: [
            CoreView(
              core: "127.0.0.1:3774", registered: true, registrations: 1, registeredSince: Date(), did: "did:bindu:x",
              agentURL: "http://localhost:3773", lastError: nil)
          ], callsInFlight: 0, queuedCalls: 0, ready: true, notReadyReason: nil, warnings: [],
          endpoints: [
            EndpointView(
              address: "127.0.0.1:5001", origin: "registered", state: "healthy", inRotation: true, callsInFlight: 0,
              ejections: 0, lastProbe: ProbeView(secondsAgo: 1, passed: true, message: "SERVING"), member: "m1",
              liveness: "heartbeat", lastMinute: calls),
            EndpointView(
              address: "127.0.0.1:5002", origin: "registered", state: "ejected", inRotation: false, callsInFlight: 0,
              ejections: 1, lastProbe: ProbeView(secondsAgo: 1, passed: false, message: "<script>"), member: "m2",
              liveness: "probe", lastMinute: none),
          ])
      ], certificates: [], sharedRegistry: nil, events: [.init(at: Date(), level: "warning", pool: "echo-agent", message: "replica ejected", detail: "")])
  }
}

/// Who may change the mesh through the admin listener.
@Suite struct AdminAuthorizationTests {
  @Test func changesNeedTheTokenOfTheFile() throws {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("token-\(UUID().uuidString)")
    try "a-token-of-some-length\n".write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    let authorization = AdminAuthorization(tokenFile: file.path)
    try authorization.check()
    #expect(authorization.refusal(authorization: "Bearer a-token-of-some-length") == nil)
    #expect(authorization.refusal(authorization: nil)?.contains("bearer token is needed") == true)
    #expect(authorization.refusal(authorization: "Bearer a-token-of-some-lengtX")?.contains("not the one") == true)
    #expect(authorization.refusal(authorization: "Basic xyz")?.contains("bearer token is needed") == true)
    #expect(AdminAuthorization(tokenFile: nil).refusal(authorization: "Bearer x")?.contains("token_file") == true)
    #expect(throws: ConfigError.self) { try AdminAuthorization(tokenFile: "/nonexistent/token").check() }
  }

  @Test func tokensCompareWhole() {
    #expect(AdminAuthorization.equalInConstantTime(Array("abc".utf8), Array("abc".utf8)))
    #expect(!AdminAuthorization.equalInConstantTime(Array("abc".utf8), Array("abd".utf8)))
    #expect(!AdminAuthorization.equalInConstantTime(Array("abc".utf8), Array("abcd".utf8)))
    #expect(!AdminAuthorization.equalInConstantTime([], Array("a".utf8)))
  }
}
