import Benchmark
import BinduHTTP2
import BinduDataPath
import BinduMeshConfig
import NIOCore
import NIOHPACK

/// The work bindu-mesh does for every call it forwards, piece by piece, with its allocations:
/// a regression in allocations per call shows here first.
let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .throughput], maxDuration: .seconds(2))

  var message = ByteBuffer()
  message.writeInteger(UInt8(0))
  message.writeInteger(UInt32(64))
  message.writeRepeatingByte(0x61, count: 64)

  Benchmark("Scan the messages of a request DATA frame") { benchmark in
    for _ in benchmark.scaledIterations {
      var scanner = MessageFrameScanner(limit: 4 << 20)
      blackHole(try scanner.scan(message))
    }
  }

  Benchmark("Parse grpc-timeout and format the time left") { benchmark in
    for _ in benchmark.scaledIterations {
      let nanos = GRPCTimeout.parse("29999m")!
      blackHole(GRPCTimeout.format(nanoseconds: nanos - 1_000))
    }
  }

  let request: HPACKHeaders = [
    ":method": "POST", ":scheme": "http", ":path": "/bindu.grpc.AgentHandler/HandleMessages",
    ":authority": "127.0.0.1:3776", "content-type": "application/grpc", "te": "trailers", "grpc-timeout": "29999m",
    "user-agent": "grpc-python/1.62",
  ]
  Benchmark("Rewrite grpc-timeout in the request headers") { benchmark in
    for _ in benchmark.scaledIterations {
      var headers = request
      headers.replaceOrAdd(name: "grpc-timeout", value: GRPCTimeout.format(nanoseconds: 29_000_000_000))
      blackHole(headers)
    }
  }

  Benchmark("Encode the request's header block for a replica") { benchmark in
    var block = ByteBuffer()
    for _ in benchmark.scaledIterations {
      block.clear()
      HeaderBlockEncoder.encode(request, to: &block)
      blackHole(block)
    }
  }

  // A peer's later calls send their headers by index into its dynamic table.
  var peerBlock = ByteBuffer()
  var peerEncoder = HPACKEncoder(allocator: ByteBufferAllocator())
  try! peerEncoder.encode(headers: request, to: &peerBlock)
  var decoder = HeaderBlockDecoder(maxHeaderListSize: 16_384)
  _ = try! decoder.decode(&peerBlock)
  peerBlock.clear()
  try! peerEncoder.encode(headers: request, to: &peerBlock)
  Benchmark("Decode a caller's header block, indexed after its first call") { benchmark in
    var decoder = decoder
    for _ in benchmark.scaledIterations {
      var block = peerBlock
      blackHole(try decoder.decode(&block))
    }
  }

  Benchmark("Read grpc-status from trailers") { benchmark in
    let trailers: HPACKHeaders = ["grpc-status": "0", "grpc-message": ""]
    for _ in benchmark.scaledIterations {
      blackHole(GRPCHeaders.status(of: trailers))
    }
  }

  let metrics = MeshMetrics()
  Benchmark("Record a call's server and client metrics") { benchmark in
    for _ in benchmark.scaledIterations {
      let server = metrics.server(pool: "echo-agent", path: "/bindu.grpc.AgentHandler/HandleMessages")
      let client = metrics.client(pool: "echo-agent", endpoint: "127.0.0.1:50051", path: "/bindu.grpc.AgentHandler/HandleMessages")
      blackHole((server, client))
    }
  }

  Benchmark("Round-robin pick over 3 replicas") { benchmark in
    var balancer = RoundRobin()
    for _ in benchmark.scaledIterations {
      blackHole(balancer.pick(count: 3) { _ in false })
    }
  }

  Benchmark("Record a call outcome for outlier detection") { benchmark in
    var health = EndpointHealth(policy: .defaults)
    let now = ContinuousClock.now
    _ = health.probe(passed: true, message: "", now: now)
    for _ in benchmark.scaledIterations {
      blackHole(health.call(failed: false, now: now, mayEject: true))
    }
  }
}
