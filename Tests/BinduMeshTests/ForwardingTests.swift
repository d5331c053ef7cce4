import BinduHTTP2
import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import BinduDataPath
@testable import BinduMesh

/// The per-call bookkeeping of forwarding: flow-control windows given back, request frames kept
/// for a retry.
@Suite struct ForwardingTests {
  private func data(_ bytes: Int, padding: Int? = nil) -> HTTP2Frame.FramePayload.Data {
    .init(data: .byteBuffer(ByteBuffer(repeating: 0x61, count: bytes)), paddingBytes: padding)
  }

  @Test func windowComesBackInBatchesOf64KiB() {
    var window = ForwardingWindow()
    let batch = ForwardingWindow.batch
    #expect(batch == 64 * 1024)
    // A unary call under a batch never needs its window back.
    #expect(window.received(data(16_384)) == nil)
    #expect(window.received(data(batch - 16_384 - 1)) == nil)
    // The frame that completes a batch carries everything received so far.
    #expect(window.received(data(1)) == batch)
    #expect(window.received(data(100)) == nil)
    #expect(window.received(data(batch)) == batch + 100)
  }

  @Test func paddingCountsAgainstTheWindow() {
    #expect(data(10).flowControlledLength == 10)
    #expect(data(10, padding: 5).flowControlledLength == 16)  // the pad length byte counts too
    var window = ForwardingWindow()
    #expect(window.received(data(ForwardingWindow.batch - 6, padding: 5)) == ForwardingWindow.batch)
  }

  @Test func keptRequestReplaysHeadersThenFramesInOrder() {
    var kept = KeptRequest(limit: 1 << 20)
    let headers: HPACKHeaders = [":path": "/bindu.grpc.AgentHandler/HandleMessages"]
    kept.waiting(.headers(.init(headers: headers)))
    for bytes in [1, 2, 3] { kept.forwarded(.data(data(bytes)), connectionOverBudget: false) }
    kept.forwarded(.headers(.init(headers: ["x-trailer": "1"], endStream: true)), connectionOverBudget: false)
    #expect(kept.headers?.headers.first(name: ":path") == "/bindu.grpc.AgentHandler/HandleMessages")
    var replayed: [String] = []
    kept.forEachFrameAfterHeaders { payload in
      switch payload {
      case .data(let frame): replayed.append("data \(frame.flowControlledLength)")
      case .headers(let frame): replayed.append("headers \(frame.endStream)")
      default: replayed.append("other")
      }
    }
    #expect(replayed == ["data 1", "data 2", "data 3", "headers true"])
    kept.removeAll()
    #expect(kept.headers == nil)
    var none = 0
    kept.forEachFrameAfterHeaders { _ in none += 1 }
    #expect(none == 0)
  }

  @Test func aRequestOverTheLimitIsDroppedOnceAReplicaHasIt() {
    var kept = KeptRequest(limit: 100)
    kept.waiting(.headers(.init(headers: [":path": "/p"])))
    kept.waiting(.data(data(60)))
    #expect(!kept.isFull)
    kept.waiting(.data(data(60)))
    // No replica has them yet: they stay, and the caller is held back.
    #expect(kept.isFull && kept.canMove && kept.headers != nil)
    kept.replicaHasAll()
    #expect(!kept.canMove && kept.headers == nil && kept.bytes == 120)
    kept.forwarded(.data(data(10)), connectionOverBudget: false)
    var left = 0
    kept.forEachFrameAfterHeaders { _ in left += 1 }
    #expect(left == 0 && kept.bytes == 130)
  }

  @Test func aRequestWithinTheLimitStaysToMove() {
    var kept = KeptRequest(limit: 100)
    kept.waiting(.headers(.init(headers: [":path": "/p"])))
    kept.forwarded(.data(data(100)), connectionOverBudget: false)
    #expect(kept.canMove && kept.headers != nil)
  }

  @Test func aConnectionOverItsBudgetDropsWhatAReplicaHasAndACommitEndsTheKeeping() {
    var kept = KeptRequest(limit: 100)
    kept.waiting(.headers(.init(headers: [":path": "/p"])))
    kept.waiting(.data(data(10)))
    kept.replicaHasAll()
    #expect(kept.canMove, "within the limit, a replica having them drops nothing")
    kept.forwarded(.data(data(10)), connectionOverBudget: true)
    #expect(!kept.canMove && kept.headers == nil && kept.retained == 0)

    var committed = KeptRequest(limit: 100)
    committed.waiting(.headers(.init(headers: [":path": "/p"])))
    committed.forwarded(.data(data(10)), connectionOverBudget: false)
    committed.keepNoMore()
    committed.forwarded(.data(data(10)), connectionOverBudget: false)
    committed.waiting(.data(data(10)))
    #expect(committed.headers == nil && committed.retained == 0 && committed.bytes == 0)
  }
}
