// swift-tools-version:6.1
import Foundation
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
]

// Release builds of the data path skip the runtime's exclusivity checks (a thread-local access
// set updated on every access to a class's stored properties and ByteBuffer's storage: a sixth
// of the mesh's CPU under load). Debug builds, which the tests run, keep them.
let dataPathSettings = swiftSettings + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

// BinduHTTP2 is called per frame from BinduDataPath: its release build offers its code to the modules
// that import it for inlining and specialization (cross-module optimization), as it was when both
// were one module. Its API is `public`, not `package`: this compiler neither inlines nor
// specializes a `package` declaration in another module, `@inlinable` or not (its generic
// `StreamIDMap` then ran unspecialized, looking up type metadata on every frame).
let http2Settings = swiftSettings + [
  .unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))
]

let package = Package(
  name: "bindu-mesh",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "bindu-mesh", targets: ["bindu-mesh"]),
    .executable(name: "bindu-echo-replica", targets: ["bindu-echo-replica"]),
    .executable(name: "bindu-bench-replica", targets: ["bindu-bench-replica"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
    .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
    .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"6.0.0"),
    .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0"),
    .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
  ],
  targets: [
    // protoc output for ../Protos/agent_handler.proto; regenerate with scripts/generate-contract.
    .target(
      name: "BinduContract",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      swiftSettings: swiftSettings
    ),
    // The data path's HTTP/2: framing, flow control, HPACK, the connection's rules and its
    // ChannelHandler, and the few gRPC wire details the data path reads. It knows nothing of
    // pools, replicas, metrics or configuration (GRPCCore for its status codes only).
    .target(
      name: "BinduHTTP2",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      swiftSettings: http2Settings
    ),
    // Passing listening sockets to a new bindu-mesh process (SCM_RIGHTS) at a hand-over.
    .target(name: "CSocketPassing"),
    // The configuration: MeshConfig and its YAML reader, the keys, HostPort, an agent's
    // definition. Every layer above reads it; it knows nothing of pools, listeners or services.
    .target(
      name: "BinduMeshConfig",
      dependencies: [
        "BinduHTTP2",
        "BinduContract",
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    // The data path: the callback listeners, one call's proxying, the pools, the balancers, the
    // endpoints and their upstream connections, with what a call touches (its metrics, its trace,
    // the TLS contexts, an endpoint's health rules). It knows nothing of the registry, the core,
    // discovery, the admin API or the state file.
    .target(
      name: "BinduDataPath",
      dependencies: [
        "BinduHTTP2",
        "BinduMeshConfig",
        "BinduContract",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "NIOExtras", package: "swift-nio-extras"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "OTel", package: "swift-otel"),
        .product(name: "Tracing", package: "swift-distributed-tracing"),
      ],
      swiftSettings: dataPathSettings
    ),
    // The control plane: the registry and the pool directory, the core registrars, discovery,
    // health checks, the admin API, the hand-over, and the process's lifecycle.
    .target(
      name: "BinduMesh",
      dependencies: [
        "BinduHTTP2",
        "BinduMeshConfig",
        "BinduDataPath",
        "BinduContract",
        "CSocketPassing",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "Tracing", package: "swift-distributed-tracing"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "bindu-mesh",
      dependencies: [
        "BinduMesh",
        "BinduMeshConfig",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    // A small AgentHandler replica: echoes the last message and says which replica answered.
    .executableTarget(
      name: "bindu-echo-replica",
      dependencies: [
        "BinduContract",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // A fast echo replica on swift-nio-http2, so benchmarks measure the proxies, not the replicas.
    .executableTarget(
      name: "bindu-bench-replica",
      dependencies: [
        "BinduContract",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "BinduHTTP2Tests",
      dependencies: [
        "BinduHTTP2",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "BinduMeshTests",
      dependencies: [
        "BinduHTTP2",
        "BinduMeshConfig",
        "BinduDataPath",
        "BinduMesh",
        "BinduContract",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    // Tests over real sockets inside one process: a whole mesh, echo replicas (the end-to-end
    // tests with the real core and real processes are in Tests/e2e).
    .testTarget(
      name: "BinduMeshSocketTests",
      dependencies: [
        "BinduMeshConfig",
        "BinduDataPath",
        "BinduMesh",
        "BinduContract",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
  ]
)

// Microbenchmarks of the per-call work (ordo-one/benchmark, with allocation counts). Opt-in, so
// ordinary builds and tests do not fetch or build the benchmark tooling:
//   BINDU_MESH_BENCHMARKS=1 swift package benchmark
if ProcessInfo.processInfo.environment["BINDU_MESH_BENCHMARKS"] != nil {
  package.dependencies.append(
    .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]))
  package.targets.append(
    .executableTarget(
      name: "PerCallPath",
      dependencies: [
        "BinduHTTP2",
        "BinduMeshConfig",
        "BinduDataPath",
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      path: "Benchmarks/PerCallPath",
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    ))
}

// The libFuzzer target over the data path's HTTP/2 (frame reader, HPACK decoder, connection).
// Opt-in: it links only with -sanitize=fuzzer (libFuzzer's driver), which scripts/fuzz passes
// (in its own build folder, .build-fuzz).
if ProcessInfo.processInfo.environment["BINDU_MESH_FUZZ"] != nil {
  package.products.append(.executable(name: "bindu-mesh-fuzz", targets: ["bindu-mesh-fuzz"]))
  package.targets.append(.target(name: "CFuzzDriver", path: "Fuzz/Sources/CFuzzDriver"))
  package.targets.append(
    .executableTarget(
      name: "bindu-mesh-fuzz",
      dependencies: [
        "BinduHTTP2",
        "CFuzzDriver",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
      ],
      path: "Fuzz/Sources/bindu-mesh-fuzz",
      swiftSettings: swiftSettings
    ))
}
