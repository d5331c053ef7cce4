// swift-tools-version:6.1
// Microbenchmarks of bindu-mesh's per-call work, with allocation counts (ordo-one/benchmark).
// Run from this folder: swift package benchmark
import PackageDescription

let package = Package(
  name: "bindu-mesh-benchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(path: ".."),
    .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
  ],
  targets: [
    .executableTarget(
      name: "PerCallPath",
      dependencies: [
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "BinduMesh", package: "bindu-mesh"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      path: "Benchmarks/PerCallPath",
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
  ]
)
