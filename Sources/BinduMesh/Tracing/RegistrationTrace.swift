import BinduDataPath
import BinduMeshConfig
import GRPCCore
import Tracing

/// The span of one registration: the mesh's `RegisterAgent` with a core (a client span, whose
/// context the core gets in `traceparent`), or a replica's with the mesh (a server span). A
/// refused one ends with an error status and the reason, so a slow or refused registration
/// shows in the trace backend. Without a tracer it does nothing.
struct RegistrationTrace {
  private let tracer: MeshTracer?
  private let span: (any Span)?

  /// The mesh registering `pool` with the core at `core` (attempt `attempt` since the last success).
  static func toCore(_ tracer: MeshTracer?, core: HostPort, pool: String, callback: HostPort, attempt: Int) -> Self {
    guard let tracer else { return Self(tracer: nil, span: nil) }
    let span = tracer.startSpan("bindu.grpc.BinduService/RegisterAgent", context: .topLevel, kind: .client)
    var attributes = Self.base
    attributes["server.address"] = core.host
    attributes["server.port"] = core.port
    attributes["bindu_mesh.pool"] = pool
    attributes["bindu_mesh.callback"] = callback.description
    attributes["bindu_mesh.attempt"] = attempt
    span.attributes = attributes
    return Self(tracer: tracer, span: span)
  }

  /// A replica at `peer` registering with the mesh.
  static func fromReplica(_ tracer: MeshTracer?, peer: String, callback: String) -> Self {
    guard let tracer else { return Self(tracer: nil, span: nil) }
    let span = tracer.startSpan("bindu.grpc.BinduService/RegisterAgent", context: .topLevel, kind: .server)
    var attributes = Self.base
    attributes["client.address"] = peer
    attributes["bindu_mesh.callback"] = callback
    span.attributes = attributes
    return Self(tracer: tracer, span: span)
  }

  private static var base: SpanAttributes {
    var attributes = SpanAttributes()
    attributes["rpc.system"] = "grpc"
    attributes["rpc.service"] = "bindu.grpc.BinduService"
    attributes["rpc.method"] = "RegisterAgent"
    return attributes
  }

  /// The span's context as request metadata (`traceparent`), for the core.
  func metadata() -> Metadata {
    var metadata = Metadata()
    guard let tracer, let span else { return metadata }
    tracer.inject(span.context, into: &metadata, using: MetadataTraceInjector())
    return metadata
  }

  /// Names the agent once the registration's config is read.
  func agent(_ name: String) {
    span?.attributes["bindu_mesh.pool"] = name
  }

  /// Ends the span: accepted, or refused for `reason`.
  func ended(success: Bool, reason: String = "") {
    guard let span else { return }
    span.attributes["bindu_mesh.success"] = success
    if !success {
      span.attributes["bindu_mesh.refusal"] = reason
      span.setStatus(SpanStatus(code: .error, message: reason))
    }
    span.end()
  }

  /// Ends the span: the call failed with `error`.
  func failed(_ error: any Error) {
    guard let span else { return }
    span.recordError(error)
    span.setStatus(SpanStatus(code: .error, message: "\(error)"))
    span.end()
  }
}

/// Writes the W3C trace context into a gRPC call's metadata.
struct MetadataTraceInjector: Injector {
  func inject(_ value: String, forKey key: String, into metadata: inout Metadata) {
    metadata.replaceOrAddString(value, forKey: key)
  }
}
