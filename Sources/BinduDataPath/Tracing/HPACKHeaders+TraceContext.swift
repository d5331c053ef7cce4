import NIOHPACK
import Tracing

/// Reads the W3C trace context (`traceparent`, `tracestate`) from a call's request headers.
struct HPACKTraceExtractor: Extractor {
  func extract(key: String, from headers: HPACKHeaders) -> String? {
    headers.first(name: key)
  }
}

/// Writes the W3C trace context into the request headers sent to a replica, in place of any
/// the caller sent.
struct HPACKTraceInjector: Injector {
  func inject(_ value: String, forKey key: String, into headers: inout HPACKHeaders) {
    headers.replaceOrAdd(name: key, value: value)
  }
}
