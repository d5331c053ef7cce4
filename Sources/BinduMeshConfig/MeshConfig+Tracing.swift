import Foundation

extension MeshConfig {
  /// Traces of the calls the mesh forwards and of its registrations, sent over OTLP
  /// (`tracing:` in YAML). Off unless an endpoint is given here or in
  /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
  ///
  /// The `OTEL_*` variables of the OpenTelemetry SDKs, when set, override these values
  /// (`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, ...);
  /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turns tracing off.
  package struct Tracing: Sendable, Hashable {
    /// The collector: an `http` or `https` URL. With `http/protobuf` it is used as it is
    /// (Phoenix: `http://127.0.0.1:6006/v1/traces`, as in a Bindu agent's `oltp_endpoint`); with
    /// `grpc`, the collector's gRPC port (`http://127.0.0.1:4317`). Default `nil`: off.
    package var otlpEndpoint: String?
    /// How spans are sent. Default `http/protobuf` (OTLP's default).
    package var otlpProtocol: OTLPProtocol = .httpProtobuf
    /// The share of calls traced when the caller sent no sampling decision, 0 to 1; a caller's
    /// `traceparent` decides for its own calls. Default 1: every call.
    package var sampleRatio: Double = 1
    /// The `service.name` of the mesh's spans. Default `bindu-mesh`.
    package var serviceName: String = "bindu-mesh"
    /// A file of headers sent with every export (`name: value` per line; `#` starts a comment),
    /// such as `authorization: Bearer ...` or Phoenix's `api_key: ...`. Read at start and again
    /// when the collector refuses the credentials. Default `nil`: none.
    package var headersFile: String?

    /// The OTLP transports.
    package enum OTLPProtocol: String, Sendable, Hashable, CaseIterable {
      /// OTLP/gRPC.
      case grpc
      /// OTLP/HTTP with protobuf bodies.
      case httpProtobuf = "http/protobuf"
    }

    /// Default values: off.
    package static var defaults: Self { Self() }
  }
}

extension MeshConfig.Tracing {
  mutating func read(_ reader: YAMLReader) throws {
    let keys = try reader.mapping(keys: ConfigKeys.tracing)
    if let value = keys["otlp_endpoint"] {
      let text = try value.string()
      guard let url = URL(string: text), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
        throw value.error("expected an http or https URL such as http://127.0.0.1:6006/v1/traces, got \"\(text)\"")
      }
      otlpEndpoint = text
    }
    if let value = keys["otlp_protocol"] {
      let text = try value.string()
      guard let parsed = OTLPProtocol(rawValue: text) else {
        throw value.error("expected one of: \(OTLPProtocol.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
      }
      otlpProtocol = parsed
    }
    if let value = keys["sample_ratio"] {
      guard let ratio = Double(try value.string()), ratio.isFinite, (0...1).contains(ratio) else {
        throw value.error("expected a number from 0 to 1, got \(value.describe())")
      }
      sampleRatio = ratio
    }
    if let value = keys["service_name"] {
      serviceName = try value.string()
      guard !serviceName.isEmpty else { throw value.error("expected a name") }
    }
    if let value = keys["headers_file"] { headersFile = try value.filePath() }
  }
}
