import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduHTTP2

@Suite struct HTTP2GuardsTests {
  let start = NIODeadline.now()

  @Test func resetsAreLimitedInASlidingWindow() {
    var guards = HTTP2Guards(limits: .init())  // 200 in 30 s
    for i in 0..<200 { #expect(guards.reset(now: start + .milliseconds(Int64(i))) == nil) }
    #expect(guards.reset(now: start + .seconds(1)) == .rapidReset)
    // A window that slides: 200 spread over more than 30 s are fine.
    var spread = HTTP2Guards(limits: .init())
    for i in 0..<1000 { #expect(spread.reset(now: start + .milliseconds(Int64(i) * 160)) == nil) }
  }

  @Test func oneEmptyDataFrameInARowIsAllowedAndDataOrEndStreamEndsTheRun() {
    var guards = HTTP2Guards(limits: .init())
    #expect(guards.data(length: 0, endStream: false) == nil)
    #expect(guards.data(length: 5, endStream: false) == nil)
    #expect(guards.data(length: 0, endStream: false) == nil)
    #expect(guards.data(length: 0, endStream: true) == nil)
    #expect(guards.data(length: 0, endStream: false) == nil)
    #expect(guards.data(length: 0, endStream: false) == .emptyData)
  }

  @Test func continuationsAreCountedPerHeaderBlock() {
    var guards = HTTP2Guards(limits: .init())
    guards.headerBlockStarted()
    for _ in 0..<5 { #expect(guards.continuation() == nil) }
    #expect(guards.continuation() == .continuations)
    guards.headerBlockStarted()
    #expect(guards.continuation() == nil)
  }

  @Test func controlFramesHaveABudgetPerWindow() {
    var limits = HTTP2Guards.Limits()
    limits.maxControlFrames = 3
    var guards = HTTP2Guards(limits: limits)
    for _ in 0..<3 { #expect(guards.control(now: start) == nil) }
    #expect(guards.control(now: start + .seconds(1)) == .controlFrames)
    #expect(guards.control(now: start + .seconds(11)) == nil)  // a new window
  }
}

@Suite struct HTTP2ErrorLabelTests {
  @Test func goAwayReasonsAreShortNames() {
    #expect(HTTP2ConnectionError(.protocolError, "x").label == "protocol_error")
    #expect(HTTP2ConnectionError(.flowControlError, "x").label == "flow_control_error")
    #expect(HTTP2ConnectionError(.rapidReset, limits: .init()).label == "rapid_reset")
    #expect(HTTP2ErrorCode(networkCode: 0xd).label == "http_1_1_required")
    #expect(HTTP2ErrorCode(networkCode: 0x99).label == "error_153")
  }

  @Test func streamErrorsHaveABudgetForTheConnectionsLife() {
    var guards = HTTP2Guards(limits: .init())  // 200, as swift-nio-http2's maximumConnectionGlitches
    for _ in 0..<200 { #expect(guards.glitch() == nil) }
    #expect(guards.glitch() == .glitches)
  }
}

/// RFC 9113 §8.2–8.3 and gRPC's rules for a caller's request, kind by kind.
@Suite struct RequestHeaderCheckTests {
  static let good: [(String, String)] = [
    (":method", "POST"), (":scheme", "http"), (":path", "/bindu.grpc.AgentHandler/HandleMessages"),
    (":authority", "127.0.0.1:3776"), ("content-type", "application/grpc"), ("te", "trailers"),
    ("grpc-timeout", "30S"), ("user-agent", "grpc-python/1.70"),
  ]

  func verdict(_ fields: [(String, String)]) -> RequestHeaderCheck.Verdict { RequestHeaderCheck.request(HPACKHeaders(fields)) }

  /// Why a request is malformed, `nil` when it is not.
  func check(_ fields: [(String, String)]) -> String? {
    if case .malformed(let problem) = verdict(fields) { return problem }
    return nil
  }

  func replacing(_ name: String, with value: String?) -> [(String, String)] {
    Self.good.compactMap { $0.0 == name ? value.map { (name, $0) } : $0 }
  }

  @Test func aGRPCRequestPasses() {
    #expect(verdict(Self.good) == .forward(contentLength: nil))
    #expect(verdict(replacing(":authority", with: nil)) == .forward(contentLength: nil))  // optional
    #expect(verdict(replacing("content-type", with: "application/grpc+proto")) == .forward(contentLength: nil))
    #expect(verdict(replacing("content-type", with: "application/grpc; charset=utf-8")) == .forward(contentLength: nil))
    #expect(verdict(Self.good + [("content-length", "42")]) == .forward(contentLength: 42))
  }

  @Test func wellFormedRequestsThatAreNotGRPCAreAnswered() {
    #expect(verdict(replacing(":method", with: "GET")) == .answer(.methodNotAllowed(head: false)))
    #expect(verdict(replacing(":method", with: "HEAD")) == .answer(.methodNotAllowed(head: true)))
    #expect(verdict(replacing(":method", with: "DELETE")) == .answer(.methodNotAllowed(head: false)))
    // A GET names no content-type: the method is what is wrong.
    #expect(verdict(replacing(":method", with: "GET").filter { $0.0 != "content-type" }) == .answer(.methodNotAllowed(head: false)))
    #expect(verdict(replacing("content-type", with: nil)) == .answer(.unsupportedMediaType))
    #expect(verdict(replacing("content-type", with: "application/json")) == .answer(.unsupportedMediaType))
    #expect(verdict(replacing("content-type", with: "application/grpcx")) == .answer(.unsupportedMediaType))
    #expect(verdict(replacing("te", with: nil)) == .forward(contentLength: nil))  // te is gRPC's, not HTTP's
    // Malformed first: a GET with a connection-specific field is reset, not answered.
    #expect(check(replacing(":method", with: "GET") + [("connection", "close")]) != nil)
    let (headers, body) = LocalAnswer.methodNotAllowed(head: false).response
    #expect(headers.first(name: ":status") == "405" && headers.first(name: "allow") == "POST")
    #expect(headers.first(name: "content-length") == "\(body?.readableBytes ?? -1)")
    #expect(LocalAnswer.methodNotAllowed(head: true).response.1 == nil)
    #expect(LocalAnswer.unsupportedMediaType.response.0.first(name: ":status") == "415")
  }

  @Test func malformedRequestsAreRefusedWithTheirReason() throws {
    let cases: [([(String, String)], String)] = [
      (replacing(":method", with: nil), "no :method"),
      (replacing(":method", with: "PO ST"), ":method is not a token"),
      (replacing(":scheme", with: nil), "no :scheme"),
      (replacing(":scheme", with: "ftp"), ":scheme"),
      (replacing(":path", with: nil), "no :path"),
      (replacing(":path", with: "nope"), ":path does not begin with /"),
      (Self.good + [("content-type", "application/grpc")], "more than one content-type"),
      (Self.good + [("content-length", "1"), ("content-length", "2")], "content-length given twice"),
      (replacing("te", with: "gzip"), "te is not"),
      (Self.good + [(":status", "200")], "pseudo-header :status"),
      (Self.good + [(":protocol", "websocket")], "pseudo-header :protocol"),
      ([Self.good[0], (":path", "/again")] + Self.good.dropFirst(), "more than one :path"),
      ([("x-first", "1")] + Self.good, "after a regular field"),
      (Self.good + [("X-Upper", "1")], "not lowercase"),
      (Self.good + [("", "empty")], "empty name"),
      (Self.good + [("x-a b", "1")], "not lowercase"),
      (Self.good + [("x-crlf", "a\r\nb: c")], "NUL, CR or LF"),
      (Self.good + [("x-nul", "a\u{0}b")], "NUL, CR or LF"),
      (Self.good + [("x-space", " padded")], "whitespace"),
      (Self.good + [("connection", "keep-alive")], "connection-specific field connection"),
      (Self.good + [("keep-alive", "5")], "connection-specific"),
      (Self.good + [("proxy-connection", "x")], "connection-specific"),
      (Self.good + [("transfer-encoding", "chunked")], "connection-specific"),
      (Self.good + [("upgrade", "h2c")], "connection-specific"),
      (Self.good + [("content-length", "12a")], "content-length is not a number"),
    ]
    for (fields, reason) in cases {
      let problem = try #require(check(fields), "accepted: \(fields)")
      #expect(problem.contains(reason), "\(fields): \(problem)")
    }
  }

  @Test func trailersEndTheStreamAndCarryNoPseudoHeader() {
    #expect(RequestHeaderCheck.trailers(HPACKHeaders([("x-checksum", "1")]), endStream: true) == nil)
    #expect(RequestHeaderCheck.trailers(HPACKHeaders([("x-checksum", "1")]), endStream: false) != nil)
    #expect(RequestHeaderCheck.trailers(HPACKHeaders([(":path", "/x")]), endStream: true) != nil)
    #expect(RequestHeaderCheck.trailers(HPACKHeaders([("Bad", "1")]), endStream: true) != nil)
  }

  @Test func aChosenPeerGetsLooserFloodLimitsAndTheSameStallLimit() {
    let defaults = HTTP2Guards.Limits(), chosen = HTTP2Guards.Limits.chosenPeer
    #expect(chosen.maxResets > defaults.maxResets && chosen.maxEmptyDataInARow > defaults.maxEmptyDataInARow)
    #expect(chosen.maxControlFrames > defaults.maxControlFrames && chosen.maxGlitches > defaults.maxGlitches)
    #expect(chosen.maxContinuations == defaults.maxContinuations)
    #expect(chosen.stalledWindowTimeout == defaults.stalledWindowTimeout)
  }
}
