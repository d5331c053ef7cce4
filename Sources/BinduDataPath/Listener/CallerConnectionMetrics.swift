import BinduHTTP2
import CoreMetrics

/// The counters of a pool's caller connections (the HTTP/2 side of its callback listener): made
/// once per listener, shared by its connections. Those with a fixed set of labels exist at 0 from
/// the start, so that rate() and increase() see their first event.
struct CallerConnectionMetrics: Sendable {
  private let pool: String
  private let metrics: MeshMetrics
  /// `bindu_mesh_http2_refused_requests_total{reason}`.
  let refusedRequests: [RequestRefusal: Counter]
  /// `bindu_mesh_http2_stalled_streams_total`.
  let stalledStreams: Counter

  init(pool: String, metrics: MeshMetrics) {
    self.pool = pool
    self.metrics = metrics
    refusedRequests = Dictionary(uniqueKeysWithValues: RequestRefusal.allCases.map {
      ($0, metrics.counter("http2_refused_requests_total", [("pool", pool), ("reason", $0.rawValue)]))
    })
    stalledStreams = metrics.counter("http2_stalled_streams_total", [("pool", pool)])
    for violation in HTTP2Guards.Violation.allCases {
      _ = metrics.counter("http2_goaways_total", [("pool", pool), ("reason", violation.rawValue)])
    }
  }

  /// `bindu_mesh_caller_connections_closed_total{reason}`: `preface_timeout` or `idle_timeout`.
  func connectionsClosed(reason: String) -> Counter {
    metrics.counter("caller_connections_closed_total", [("pool", pool), ("reason", reason)])
  }

  /// `bindu_mesh_http2_goaways_total{reason}`: a caller's connection ended with GOAWAY for `reason`.
  func goAways(reason: String) -> Counter {
    metrics.counter("http2_goaways_total", [("pool", pool), ("reason", reason)])
  }
}
