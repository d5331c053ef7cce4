import NIOCore
import Testing

@testable import BinduDataPath
@testable import BinduMesh

/// A call's deadline as a value: where it comes from, which clock checks it, what a replica is
/// told, and when a replica's reset counts as the deadline.
@Suite struct CallDeadlineTests {
  let now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

  @Test func theCallersGrpcTimeoutComesFirstAndHasItsOwnTimer() throws {
    let deadline = try #require(try CallDeadline.of(grpcTimeout: "250m", defaultTimeout: .seconds(60), now: now))
    #expect(deadline.origin == .caller && deadline.hasOwnTimer && deadline.isPassedOn)
    #expect(deadline.at == now + .milliseconds(250))
    #expect(deadline.timeout == .milliseconds(250))
    #expect(!deadline.isPast(now + .milliseconds(249)) && deadline.isPast(now + .milliseconds(250)))
  }

  @Test func withoutOneTheDefaultAppliesCheckedByTheConnectionsTick() throws {
    let deadline = try #require(try CallDeadline.of(grpcTimeout: nil, defaultTimeout: .seconds(30), now: now))
    #expect(deadline.origin == .byDefault && !deadline.hasOwnTimer && !deadline.isPassedOn)
    #expect(deadline.at == now + .seconds(30))
    #expect(deadline.grpcTimeout(at: now) == nil, "the mesh's own default is not passed on to the replica")
    #expect(!deadline.replicaGaveUp(at: now + .seconds(30)), "a replica was never told of it")
    #expect(try CallDeadline.of(grpcTimeout: nil, defaultTimeout: nil, now: now) == nil)
  }

  @Test func aMalformedGrpcTimeoutIsNamed() {
    #expect(throws: CallDeadline.Malformed(value: "soon")) {
      try CallDeadline.of(grpcTimeout: "soon", defaultTimeout: .seconds(30), now: now)
    }
    #expect(throws: CallDeadline.Malformed(value: "123456789S")) {
      try CallDeadline.of(grpcTimeout: "123456789S", defaultTimeout: nil, now: now)
    }
  }

  @Test func theReplicaIsToldTheTimeLeftNeverLessAndNeverNothing() throws {
    let deadline = try #require(try CallDeadline.of(grpcTimeout: "2S", defaultTimeout: nil, now: now))
    #expect(deadline.grpcTimeout(at: now + .milliseconds(500)) == "1500000u")
    #expect(deadline.grpcTimeout(at: now + .seconds(5)) == "1n", "past the deadline, the least there is")
  }

  @Test func aReplicaEndingTheStreamWithin50MsOfTheDeadlineGaveUpAtIt() throws {
    let deadline = try #require(try CallDeadline.of(grpcTimeout: "1S", defaultTimeout: nil, now: now))
    #expect(!deadline.replicaGaveUp(at: now + .milliseconds(900)))
    #expect(deadline.replicaGaveUp(at: now + .milliseconds(950)))
    #expect(deadline.replicaGaveUp(at: now + .seconds(2)))
  }
}
