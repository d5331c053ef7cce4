import Foundation

/// The status page at `/` on the admin listener: one self-contained HTML document (no script, no
/// external resource) that reloads itself every few seconds.
///
/// Rows carry `data-` attributes (`data-pool`, `data-address`, `data-state`, `data-in-rotation`)
/// so that scripts and tests can read the page as well as people.
enum StatusPage {
  /// Seconds between reloads.
  static let refreshSeconds = 5
  /// Events shown (the ring keeps more; `/status` has them all).
  static let eventsShown = 50

  static func html(_ report: StatusReport) -> String {
    var page = """
      <!doctype html>
      <html lang="en"><head><meta charset="utf-8">
      <meta http-equiv="refresh" content="\(refreshSeconds)">
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <title>bindu-mesh status</title>
      <style>\(style)</style></head><body>
      <h1>bindu-mesh <small>\(escape(report.version))</small></h1>
      <p class="\(report.ready ? "ok" : "bad")" id="readiness">\(report.ready ? "ready" : "not ready")\
      \(report.notReady.isEmpty ? "" : ": " + report.notReady.map(escape).joined(separator: "; "))</p>
      <p class="meta">\(escape(timestamp(report.generatedAt))) · reloads every \(refreshSeconds) s · \
      <a href="/status">/status</a> · <a href="/pools">/pools</a> · <a href="/metrics">/metrics</a></p>

      """
    if report.pools.isEmpty { page += "<p>No pool yet: waiting for a replica to register.</p>\n" }
    for pool in report.pools { page += section(pool) }
    if let shared = report.sharedRegistry { page += sharedRegistry(shared) }
    page += certificates(report.certificates)
    page += events(report.events.prefix(eventsShown))
    return page + "</body></html>\n"
  }

  private static func section(_ pool: PoolView) -> String {
    let agent = escape(pool.agent)
    var html = """
      <section class="pool" data-pool="\(agent)">
      <h2>\(agent) <span class="\(pool.ready ? "ok" : "bad")">\(pool.ready ? "ready" : "not ready")</span></h2>
      <p>\(pool.declared ? "declared" : "made by registration") · callback listener \(escape(pool.callbackListen)) \
      · calls in flight <b class="in-flight">\(pool.callsInFlight)</b> · queued <b class="queued">\(pool.queuedCalls)</b>\
      \(pool.notReadyReason.map { " · <span class=\"bad\">\(escape($0))</span>" } ?? "")</p>

      """
    html += pool.warnings.map { "<p class=\"warn\">\(escape($0))</p>\n" }.joined()
    html += "<table class=\"cores\"><tr><th>core</th><th>registered</th><th>since</th><th>times</th><th>DID</th>"
    html += "<th>agent URL</th><th>last error</th></tr>\n"
    for core in pool.cores {
      html += "<tr data-core=\"\(escape(core.core))\"><td>\(escape(core.core))</td>"
      html += "<td class=\"\(core.registered ? "ok" : "bad")\">\(core.registered ? "yes" : "no")</td>"
      html += "<td>\(core.registeredSince.map(timestamp) ?? "")</td><td>\(core.registrations)</td>"
      html += "<td><code>\(escape(core.did ?? ""))</code></td><td>\(escape(core.agentURL ?? ""))</td>"
      html += "<td>\(escape(core.lastError ?? ""))</td></tr>\n"
    }
    html += "</table>\n<table class=\"endpoints\"><tr><th>endpoint</th><th>origin</th><th>state</th>"
    html += "<th>in rotation</th><th>in flight</th><th>success</th><th>calls/s</th><th>p50</th><th>p99</th>"
    html += "<th>last probe</th><th>ejections</th><th>member</th></tr>\n"
    for endpoint in pool.endpoints { html += row(endpoint, pool: agent) }
    return html + "</table>\n<p class=\"meta\">success, calls/s, p50 and p99: the last minute.</p></section>\n"
  }

  private static func row(_ endpoint: EndpointView, pool: String) -> String {
    let recent = endpoint.lastMinute
    let stateClass = endpoint.state == "healthy" ? "ok" : ["pending", "draining"].contains(endpoint.state) ? "warn" : "bad"
    let probe = endpoint.lastProbe.map {
      "\($0.passed ? "passed" : "failed") \(Int($0.secondsAgo.rounded())) s ago\($0.passed ? "" : ": " + escape($0.message))"
    }
    var html = "<tr class=\"endpoint\" data-pool=\"\(pool)\" data-address=\"\(escape(endpoint.address))\" "
    html += "data-state=\"\(escape(endpoint.state))\" data-in-rotation=\"\(endpoint.inRotation)\">"
    html += "<td>\(escape(endpoint.address))</td><td>\(escape(endpoint.origin))</td>"
    html += "<td class=\"\(stateClass)\">\(escape(endpoint.state))</td>"
    html += "<td class=\"\(endpoint.inRotation ? "ok" : "bad")\">\(endpoint.inRotation ? "yes" : "no")</td>"
    html += "<td>\(endpoint.callsInFlight)</td>"
    html += "<td>\(recent.successRate.map { String(format: "%.1f %%", $0 * 100) } ?? "–")</td>"
    html += "<td>\(String(format: "%.2f", recent.callsPerSecond))</td>"
    html += "<td>\(milliseconds(recent.p50Seconds))</td><td>\(milliseconds(recent.p99Seconds))</td>"
    html += "<td>\(probe ?? "none yet")</td><td>\(endpoint.ejections)</td>"
    html += "<td>\(escape(endpoint.member ?? ""))\(endpoint.liveness.map { " (\(escape($0)))" } ?? "")</td></tr>\n"
    return html
  }

  private static func sharedRegistry(_ shared: SharedRegistryView) -> String {
    let lag = shared.lagSeconds.map { String(format: "%.1f s ago", $0) } ?? "never"
    var html = "<h2>Shared registry</h2><p id=\"shared-registry\" class=\"\(shared.up ? "ok" : "bad")\">"
    html += "\(escape(shared.database)) as \(escape(shared.meshID)): \(shared.up ? "up" : "down")"
    html += " · last read \(lag) · \(shared.pendingWrites) writes pending · \(shared.writeErrors) write errors"
    if !shared.up, let error = shared.lastError { html += " · \(escape(error))" }
    return html + "</p>\n"
  }

  private static func certificates(_ certificates: [CertificateView]) -> String {
    guard !certificates.isEmpty else { return "<h2>Certificates</h2><p>No TLS in use.</p>\n" }
    var html = "<h2>Certificates</h2><table class=\"certificates\"><tr><th>use</th><th>expires</th><th>days left</th></tr>\n"
    for certificate in certificates {
      let days = certificate.daysLeft
      html += "<tr data-use=\"\(escape(certificate.use))\"><td>\(escape(certificate.use))</td>"
      html += "<td>\(timestamp(certificate.notAfter))</td>"
      html += "<td class=\"\(days < 0 ? "bad" : days < 14 ? "warn" : "ok")\">\(Int(days.rounded(.down)))</td></tr>\n"
    }
    return html + "</table>\n"
  }

  private static func events(_ events: ArraySlice<EventRing.Event>) -> String {
    guard !events.isEmpty else { return "<h2>Recent events</h2><p>None yet.</p>\n" }
    var html = "<h2>Recent events</h2><table class=\"events\"><tr><th>time</th><th>level</th><th>pool</th>"
    html += "<th>event</th><th>detail</th></tr>\n"
    for event in events {
      let levelClass = event.level == "notice" ? "" : event.level == "warning" ? "warn" : "bad"
      html += "<tr><td>\(timestamp(event.at))</td><td class=\"\(levelClass)\">\(escape(event.level))</td>"
      html += "<td>\(escape(event.pool ?? ""))</td><td>\(escape(event.message))</td><td>\(escape(event.detail))</td></tr>\n"
    }
    return html + "</table>\n"
  }

  private static func milliseconds(_ seconds: Double?) -> String {
    guard let seconds else { return "–" }
    return seconds < 0.01 ? String(format: "%.2f ms", seconds * 1000) : String(format: "%.0f ms", seconds * 1000)
  }

  private static func timestamp(_ date: Date) -> String {
    date.formatted(.iso8601)
  }

  /// `text` with `&`, `<`, `>` and `"` escaped for HTML text and attribute values.
  static func escape(_ text: String) -> String {
    var escaped = ""
    escaped.reserveCapacity(text.utf8.count)
    for character in text {
      switch character {
      case "&": escaped += "&amp;"
      case "<": escaped += "&lt;"
      case ">": escaped += "&gt;"
      case "\"": escaped += "&quot;"
      default: escaped.append(character)
      }
    }
    return escaped
  }

  private static let style = """
    body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}h1 small{color:#888;font-weight:normal}\
    table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}\
    th{background:#f4f4f4}.ok{color:#17702f}.bad{color:#b3261e;font-weight:bold}.warn{color:#9a6700}\
    .meta{color:#777;font-size:12px}code{font-size:12px}section.pool{border-top:2px solid #eee;margin-top:1em}
    """
}
