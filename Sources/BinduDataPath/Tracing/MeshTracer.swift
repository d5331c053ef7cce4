import BinduMeshConfig
import CoreMetrics
import Foundation
import Logging
import OTel
import ServiceLifecycle
import Tracing

/// The mesh's tracer when tracing is on (``MeshConfig/Tracing``): spans go to a bounded queue
/// and from it, in batches, to the OTLP collector, off every call's path. A slow or absent
/// collector costs spans, never calls: those dropped are counted in
/// `bindu_mesh_trace_spans_dropped_total` and logged at most once a minute.
package final class MeshTracer: Sendable {
  /// The OpenTelemetry tracer (swift-otel), with the W3C `traceparent` propagator.
  let tracer: any Tracer
  /// Exports the spans; runs in the mesh's service group, first, so it stops last.
  package let service: any Service
  /// Where spans go, for the start's log line.
  package let endpoint: String

  private init(tracer: any Tracer, service: any Service, endpoint: String) {
    self.tracer = tracer
    self.service = service
    self.endpoint = endpoint
  }

  /// The tracer `config` and the `OTEL_*` variables in `environment` ask for, or `nil` when
  /// tracing is off.
  ///
  /// - Throws: ``ConfigError`` for a headers file that cannot be read or a value the exporter
  ///   refuses.
  package static func make(
    _ config: MeshConfig.Tracing, environment: [String: String] = ProcessInfo.processInfo.environment,
    metrics: MeshMetrics, logger: Logger
  ) throws -> MeshTracer? {
    guard let endpoint = Self.endpoint(config, environment: environment) else { return nil }
    // Bindu's docs set OTEL_EXPORTER_OTLP_ENDPOINT to the traces URL itself
    // (http://localhost:6006/v1/traces), where OTLP/HTTP would append /v1/traces once more:
    // such a value is taken as the traces endpoint.
    if let shared = environment["OTEL_EXPORTER_OTLP_ENDPOINT"], shared.hasSuffix("/v1/traces"),
      environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == nil
    {
      setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", shared, 0)
    }
    var otel = OTel.Configuration.default
    otel.serviceName = config.serviceName
    otel.logs.enabled = false
    otel.metrics.enabled = false
    otel.propagators = [.traceContext]
    otel.traces.enabled = true
    otel.traces.exporter = .otlp
    otel.traces.sampler = .parentBasedTraceIDRatio(ratio: config.sampleRatio) ?? .parentBasedAlwaysOn
    if let given = config.otlpEndpoint { otel.traces.otlpExporter.endpoint = given }
    otel.traces.otlpExporter.protocol = config.otlpProtocol == .grpc ? .grpc : .httpProtobuf
    if let file = config.headersFile {
      let headers = try OTLPHeadersFile(path: file)
      otel.traces.otlpExporter.headers = try headers.read()
      // A collector that refuses the credentials gets the file as it is now (a rotated token).
      otel.traces.otlpExporter.onExportFailure = { failure in
        guard let fresh = try? headers.read(), !fresh.elementsEqual(failure.configuration.headers, by: ==) else {
          return .discard
        }
        return .retry(configuration: .init(headers: fresh))
      }
    }
    let dropped = metrics.counter("trace_spans_dropped_total", [])
    otel.diagnosticLogger = .custom(Logger(label: "bindu-mesh.otel") { _ in
      TraceExportDiagnostics(dropped: dropped, logger: logger)
    })
    otel.diagnosticLogLevel = .info
    do {
      let (tracer, service) = try OTel.makeTracingBackend(configuration: otel)
      return MeshTracer(tracer: tracer, service: service, endpoint: endpoint)
    } catch {
      throw ConfigError(source: "tracing", key: "tracing.otlp_endpoint", message: "the OTLP exporter refused it: \(error)")
    }
  }

  /// The collector tracing is on for: the config's endpoint or the environment's, unless the
  /// environment turns tracing off.
  static func endpoint(_ config: MeshConfig.Tracing, environment: [String: String]) -> String? {
    if environment["OTEL_SDK_DISABLED"]?.lowercased() == "true" { return nil }
    if environment["OTEL_TRACES_EXPORTER"]?.lowercased() == "none" { return nil }
    let given = [
      environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], environment["OTEL_EXPORTER_OTLP_ENDPOINT"], config.otlpEndpoint,
    ]
    return given.compactMap { $0 }.first { !$0.isEmpty }
  }

  /// Starts a span as a child of `context`'s.
  package func startSpan(_ name: String, context: ServiceContext, kind: SpanKind) -> any Span {
    tracer.startSpan(name, context: context, ofKind: kind)
  }

  /// The context a `traceparent` (and `tracestate`) in `carrier` continues; empty when it has none.
  func extract<Extractor: Tracing.Extractor>(_ carrier: Extractor.Carrier, using extractor: Extractor) -> ServiceContext {
    var context = ServiceContext.topLevel
    tracer.extract(carrier, into: &context, using: extractor)
    return context
  }

  /// Writes `context`'s `traceparent` (and `tracestate`) into `carrier`.
  package func inject<Injector: Tracing.Injector>(_ context: ServiceContext, into carrier: inout Injector.Carrier, using injector: Injector) {
    tracer.inject(context, into: &carrier, using: injector)
  }
}
