import NIOCore
import NIOHTTP2
import Testing

@testable import BinduMesh

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
}
