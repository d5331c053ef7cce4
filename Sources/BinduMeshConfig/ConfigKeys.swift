/// Every key the YAML config accepts, section by section: the one list the reader checks
/// against and the tests hold `Config/bindu-mesh.yaml` (the config reference) to.
package enum ConfigKeys {
  static let top = [
    "core", "cores", "registry", "callbacks", "upstream", "shutdown", "admin", "state", "balancer", "health", "outlier_detection", "retry",
    "pools", "tracing",
  ]
  static let core = ["address", "heartbeat_interval", "call_timeout", "retry_initial_backoff", "retry_max_backoff", "tls"]
  static let coreTarget = ["address", "agent_url"]
  static let registry = [
    "listen", "replica_timeout", "core_wait", "rewrite_loopback_callbacks", "tls", "postgres_url", "mesh_id",
    "postgres_tls", "advertise_host",
  ]
  static let callbacks = [
    "listen_host", "first_port", "max_pools", "advertise_host", "tls", "upstream_tls", "max_concurrent_streams",
    "preface_timeout", "idle_timeout", "stalled_window_timeout", "max_buffered_bytes",
  ]
  static let upstream = [
    "connect_timeout", "max_message_bytes", "max_concurrent_streams", "reconnect_max_backoff", "idle_timeout",
    "keepalive_interval", "keepalive_timeout", "default_call_timeout", "max_header_list_size",
  ]
  static let shutdown = ["grace_period"]
  static let state = ["dir"]
  static let admin = ["listen", "access_log", "tls_reload_interval", "token_file"]
  static let balancer = ["policy", "max_concurrent_calls", "max_queued_calls"]
  static let health = ["interval", "timeout", "unhealthy_threshold", "healthy_threshold", "start_healthy", "panic_mode"]
  static let outlierDetection = ["consecutive_failures", "base_ejection_time", "max_ejection_time", "max_ejection_percent"]
  static let retry = [
    "max_attempts", "budget_percent", "min_concurrent_retries", "on_unavailable", "replay_started_calls",
    "max_kept_request_bytes",
  ]
  static let pool = [
    "agent", "listen", "config", "config_file", "skills", "replicas", "dns", "dns_refresh", "balancer", "health",
    "outlier_detection", "retry", "listener_tls", "upstream_tls",
  ]
  static let skill = [
    "name", "description", "tags", "input_modes", "output_modes", "version", "author", "raw_content", "file", "format",
  ]
  static let tracing = ["otlp_endpoint", "otlp_protocol", "sample_ratio", "service_name", "headers_file"]
  static let listenerTLS = ["cert", "key", "client_ca", "client_auth", "allowed_identities"]
  static let clientTLS = ["ca", "cert", "key", "server_name", "allowed_identities"]

  /// Every key as a dotted path (`core.tls.ca`, `pools[].listener_tls.cert`, ...).
  package static var all: [String] {
    func under(_ prefix: String, _ keys: [String]) -> [String] { keys.map { "\(prefix).\($0)" } }
    let policy = ["balancer": balancer, "health": health, "outlier_detection": outlierDetection, "retry": retry]
    var paths = top
    paths += under("core", core) + under("core.tls", clientTLS) + under("cores[]", coreTarget)
    paths += under("registry", registry) + under("registry.tls", listenerTLS)
    paths += under("registry.postgres_tls", clientTLS)
    paths += under("callbacks", callbacks) + under("callbacks.tls", listenerTLS)
    paths += under("callbacks.upstream_tls", clientTLS)
    paths += under("upstream", upstream) + under("shutdown", shutdown) + under("admin", admin)
    paths += under("state", state) + under("tracing", tracing)
    for (section, keys) in policy { paths += under(section, keys) + under("pools[].\(section)", keys) }
    paths += under("pools[]", pool) + under("pools[].skills[]", skill)
    paths += under("pools[].listener_tls", listenerTLS) + under("pools[].upstream_tls", clientTLS)
    return paths.sorted()
  }
}
