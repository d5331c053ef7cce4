import Logging
import NIOPosix
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

/// What a pool does with each DNS answer (``ReplicaPool/setDiscovered(_:)``): new addresses
/// join, addresses gone drain, the rest keep their endpoints, and endpoints declared at fixed
/// addresses are left alone. No socket is opened: endpoints dial only when called.
@Suite struct DiscoveryDiffTests {
  @Test func eachAnswerAddsTheNewAddressesAndDrainsTheGoneOnes() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let config = MeshConfig.defaults
    let pool = ReplicaPool(
      name: "dns-pool", declared: true, definition: nil, policy: config.policy, loops: [group.next()],
      settings: LiveSettings(config), metrics: MeshMetrics(), security: nil, logger: Logger(label: "test"))
    let (a, b, c, fixed) = (
      HostPort(host: "10.0.0.1", port: 50051), HostPort(host: "10.0.0.2", port: 50051),
      HostPort(host: "10.0.0.3", port: 50051), HostPort(host: "10.0.0.9", port: 50051)
    )
    pool.addConfigured(fixed)

    let first = pool.setDiscovered([a, b])
    #expect(first.added.map(\.address) == [a, b])
    #expect(first.removed.isEmpty)
    let kept = pool.endpoints.first { $0.address == b }

    let second = pool.setDiscovered([b, c, c])  // a name may list an address twice
    #expect(second.added.map(\.address) == [c])
    #expect(second.removed.map(\.address) == [a])
    #expect(pool.endpoints.first { $0.address == b } === kept, "an address still answered keeps its endpoint")

    let same = pool.setDiscovered([c, b])
    #expect(same.added.isEmpty && same.removed.isEmpty)

    let empty = pool.setDiscovered([])
    #expect(Set(empty.removed.map(\.address)) == [b, c])
    #expect(pool.endpoints.map(\.address) == [fixed], "declared replicas are not DNS's to remove")
    try await group.shutdownGracefully()
  }
}
