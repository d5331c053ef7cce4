import Foundation
import Logging
import NIOHPACK
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

@Suite struct TracingTests {
  @Test func tracingKeysAreReadAndCheckedWithTheirLine() throws {
    let config = try MeshConfig(
      yaml: """
        tracing:
          otlp_endpoint: http://127.0.0.1:4317
          otlp_protocol: grpc
          sample_ratio: 0.25
          service_name: edge-mesh
        """, source: "t.yaml")
    #expect(config.tracing.otlpEndpoint == "http://127.0.0.1:4317")
    #expect(config.tracing.otlpProtocol == .grpc)
    #expect(config.tracing.sampleRatio == 0.25)
    #expect(config.tracing.serviceName == "edge-mesh")
    #expect(MeshConfig.defaults.tracing.otlpEndpoint == nil)
    for (yaml, key) in [
      ("tracing:\n  otlp_endpoint: 127.0.0.1:4317", "tracing.otlp_endpoint"),
      ("tracing:\n  otlp_protocol: http/json", "tracing.otlp_protocol"),
      ("tracing:\n  sample_ratio: 1.5", "tracing.sample_ratio"),
      ("tracing:\n  service_name: ''", "tracing.service_name"),
      ("tracing:\n  sample: 1", "tracing.sample"),
    ] {
      let error = #expect(throws: ConfigError.self) { try MeshConfig(yaml: yaml, source: "t.yaml") }
      #expect(error?.key == key)
      #expect(error?.position?.hasPrefix("2:") == true, "\(String(describing: error))")
    }
  }

  @Test func tracingIsOnForAnEndpointInTheConfigOrTheEnvironmentUnlessTheEnvironmentSaysOff() {
    var config = MeshConfig.Tracing.defaults
    #expect(MeshTracer.endpoint(config, environment: [:]) == nil)
    #expect(MeshTracer.endpoint(config, environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"]) == "http://c:4318")
    config.otlpEndpoint = "http://file:4318/v1/traces"
    #expect(MeshTracer.endpoint(config, environment: [:]) == "http://file:4318/v1/traces")
    #expect(MeshTracer.endpoint(config, environment: ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t"]) == "http://t")
    #expect(MeshTracer.endpoint(config, environment: ["OTEL_SDK_DISABLED": "true"]) == nil)
    #expect(MeshTracer.endpoint(config, environment: ["OTEL_TRACES_EXPORTER": "none"]) == nil)
  }

  @Test func headersFileIsReadLineByLineAndABadLineIsNamed() throws {
    let headers = try OTLPHeadersFile.parse("# Phoenix\n\nAuthorization: Bearer abc:def\napi_key: k1\n", source: "h")
    #expect(headers.map(\.0) == ["authorization", "api_key"])
    #expect(headers.map(\.1) == ["Bearer abc:def", "k1"])
    let error = #expect(throws: ConfigError.self) { try OTLPHeadersFile.parse("a: 1\nno colon here\n", source: "h") }
    #expect(error?.position == "2")
    #expect(error?.description.contains("no colon") == false, "a header file's values are never echoed")
    #expect(throws: ConfigError.self) { try OTLPHeadersFile(path: "/nonexistent/otlp-headers") }
  }

  @Test func exporterLinesAboutLostSpansAreCounted() {
    #expect(
      TraceExportDiagnostics.spansLost(
        message: "Spans were dropped this iteration because queue was full", metadata: ["dropped_count": "17"]) == 17)
    #expect(TraceExportDiagnostics.spansLost(message: "Failed to export batch.", metadata: ["batch_size": "5"]) == 5)
    #expect(TraceExportDiagnostics.spansLost(message: "Exported batch.", metadata: ["batch_size": "5"]) == 0)
  }

  /// The replica's `traceparent` continues the caller's trace with the attempt's span as parent.
  @Test func theReplicaGetsTheAttemptsContextInTheCallersTrace() throws {
    var config = MeshConfig.Tracing.defaults
    config.otlpEndpoint = "http://127.0.0.1:9"  // never exported to: the exporter's service is not run
    let tracer = try #require(try MeshTracer.make(config, environment: [:], metrics: MeshMetrics(), logger: Logger(label: "t")))
    let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
    let callerSpan = "00f067aa0ba902b7"
    var request = HPACKHeaders([(":path", "/bindu.grpc.AgentHandler/HandleMessages"), ("traceparent", "00-\(traceID)-\(callerSpan)-01")])
    var trace = CallTrace(
      tracer: tracer, headers: request, path: "/bindu.grpc.AgentHandler/HandleMessages", pool: "p", deadline: nil)
    trace.attemptBegan(replica: HostPort(host: "127.0.0.1", port: 50051), number: 1, retrying: nil)
    trace.inject(into: &request)
    let first = try #require(request.first(name: "traceparent")).split(separator: "-")
    #expect(request[canonicalForm: "traceparent"].count == 1)
    #expect(first.count == 4 && first[1] == Substring(traceID) && first[2] != Substring(callerSpan) && first[3] == "01")
    trace.endAttempt(code: 14, movedOn: "cannot connect")
    trace.attemptBegan(replica: HostPort(host: "127.0.0.1", port: 50052), number: 2, retrying: "cannot connect")
    trace.inject(into: &request)
    let second = try #require(request.first(name: "traceparent")).split(separator: "-")
    #expect(second[1] == Substring(traceID) && second[2] != first[2], "each attempt is a span of its own")
    trace.ended(code: 0, message: nil, attempts: 2)

    // A call without a traceparent starts a trace of its own, sampled (ratio 1).
    var fresh = HPACKHeaders([(":path", "/bindu.grpc.AgentHandler/HandleMessages")])
    var own = CallTrace(tracer: tracer, headers: fresh, path: "/bindu.grpc.AgentHandler/HandleMessages", pool: "p", deadline: nil)
    own.attemptBegan(replica: HostPort(host: "127.0.0.1", port: 50051), number: 1, retrying: nil)
    own.inject(into: &fresh)
    let started = try #require(fresh.first(name: "traceparent")).split(separator: "-")
    #expect(started.count == 4 && started[1] != Substring(traceID) && started[3] == "01")
    own.ended(code: 0, message: nil, attempts: 1)
  }

  /// A call left out by sampling still passes a context on: the replica's spans are left out too.
  @Test func aCallLeftOutBySamplingGivesTheReplicaAnUnsampledContext() throws {
    var config = MeshConfig.Tracing.defaults
    config.otlpEndpoint = "http://127.0.0.1:9"
    config.sampleRatio = 0
    let tracer = try #require(try MeshTracer.make(config, environment: [:], metrics: MeshMetrics(), logger: Logger(label: "t")))
    var headers = HPACKHeaders([(":path", "/bindu.grpc.AgentHandler/HandleMessages")])
    var trace = CallTrace(tracer: tracer, headers: headers, path: "/bindu.grpc.AgentHandler/HandleMessages", pool: "p", deadline: nil)
    #expect(!trace.server.isRecording)
    trace.attemptBegan(replica: HostPort(host: "127.0.0.1", port: 50051), number: 1, retrying: nil)
    trace.inject(into: &headers)
    let parts = try #require(headers.first(name: "traceparent")).split(separator: "-")
    #expect(parts.count == 4 && parts[3] == "00")
    trace.ended(code: 0, message: nil, attempts: 1)
  }
}
