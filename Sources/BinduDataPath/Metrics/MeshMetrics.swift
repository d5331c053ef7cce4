import CoreMetrics
import Prometheus
import Synchronization

/// Every metric of one mesh, in its own Prometheus registry (so several meshes can share a
/// process, as tests do).
///
/// gRPC calls follow go-grpc-prometheus (`grpc_server_*`, `grpc_client_*`, labelled
/// `grpc_service`, `grpc_method`, `grpc_type`, plus `pool`, and `endpoint` for calls the mesh
/// makes); the mesh's own state is under `bindu_mesh_*`. Label sets are made once and kept.
package final class MeshMetrics: Sendable {
  /// The registry ``render()`` writes out.
  package let registry: PrometheusCollectorRegistry
  let factory: PrometheusMetricsFactory
  private let calls = Mutex<[CallKey: GRPCCallMetrics]>([:])

  private struct CallKey: Hashable {
    var side: String
    var pool: String
    var endpoint: String?
    var path: String
  }

  /// Creates empty metrics.
  package init() {
    registry = PrometheusCollectorRegistry()
    factory = PrometheusMetricsFactory(registry: registry)
  }

  /// Server-side metrics of calls to `path` served for `pool` (`""` for the registry).
  package func server(pool: String, path: String) -> GRPCCallMetrics {
    call(CallKey(side: "server", pool: pool, endpoint: nil, path: path))
  }

  /// Client-side metrics of calls the mesh makes to `endpoint` for `pool`.
  package func client(pool: String, endpoint: String, path: String) -> GRPCCallMetrics {
    call(CallKey(side: "client", pool: pool, endpoint: endpoint, path: path))
  }

  private func call(_ key: CallKey) -> GRPCCallMetrics {
    var key = key
    key.path = GRPCCallMetrics.labelPath(key.path)
    return calls.withLock { calls in
      if let metrics = calls[key] { return metrics }
      let (service, method) = GRPCCallMetrics.split(path: key.path)
      var labels = [
        ("grpc_service", String(service)), ("grpc_method", String(method)),
        ("grpc_type", GRPCCallMetrics.type(ofMethod: method)), ("pool", key.pool),
      ]
      if let endpoint = key.endpoint { labels.append(("endpoint", endpoint)) }
      let metrics = GRPCCallMetrics(side: key.side, labels: labels, factory: factory)
      calls[key] = metrics
      return metrics
    }
  }

  /// A counter of the mesh's own (`bindu_mesh_…`), made once per label set by the registry.
  package func counter(_ name: String, _ labels: [(String, String)]) -> CoreMetrics.Counter {
    Counter(label: "bindu_mesh_\(name)", dimensions: labels, factory: factory)
  }

  /// A gauge of the mesh's own (`bindu_mesh_…`).
  package func gauge(_ name: String, _ labels: [(String, String)]) -> CoreMetrics.Gauge {
    Gauge(label: "bindu_mesh_\(name)", dimensions: labels, factory: factory)
  }

  /// Everything in the Prometheus text format.
  package func render() -> String {
    var buffer: [UInt8] = []
    buffer.reserveCapacity(16 * 1024)
    registry.emit(into: &buffer)
    return String(decoding: buffer, as: UTF8.self)
  }
}
