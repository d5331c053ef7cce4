import BinduMeshConfig
import Logging

/// The TLS of the pools, built from their config: each pool's listener TLS and TLS to its
/// replicas, and those of pools made by registration (`callbacks.tls`, `callbacks.upstream_tls`,
/// built once). It keeps every material it built, for ``TLSReloader`` to watch.
///
/// A value the pool directory keeps: a reload that fails puts back the one it had.
package struct PoolTLS {
  /// Every TLS context source of the pools, one per `use`.
  package private(set) var materials: [TLSMaterial] = []
  private var callbacksListener: ListenerTLSContext??
  private var callbacksUpstream: UpstreamTLSContext??
  let logger: Logger

  package init(logger: Logger) { self.logger = logger }

  /// A listener's TLS from `tls` (`use` names it: `callback:AGENT`); it replaces the material
  /// of the same use.
  package mutating func listener(_ tls: MeshConfig.ListenerTLS, use: String) throws -> ListenerTLSContext {
    let material = try TLSMaterial.server(tls, use: use, logger: logger)
    keep(material)
    return ListenerTLSContext(material: material, allowedIdentities: tls.allowedIdentities)
  }

  /// TLS to a pool's replicas from `tls` (`use`: `upstream:AGENT`); it replaces the material of
  /// the same use.
  package mutating func upstream(_ tls: MeshConfig.ClientTLS, use: String) throws -> UpstreamTLSContext {
    let material = try TLSMaterial.client(tls, use: use, logger: logger)
    keep(material)
    return UpstreamTLSContext(material: material, serverName: tls.serverName, allowedIdentities: tls.allowedIdentities)
  }

  /// TLS of listeners of pools made by registration (`callbacks.tls`), built once.
  package mutating func registrationListener(_ callbacks: MeshConfig.Callbacks) throws -> ListenerTLSContext? {
    if let made = callbacksListener { return made }
    let made = try callbacks.tls.map { try listener($0, use: "callbacks") }
    callbacksListener = .some(made)
    return made
  }

  /// TLS to replicas of pools made by registration (`callbacks.upstream_tls`), built once.
  package mutating func registrationUpstream(_ callbacks: MeshConfig.Callbacks) throws -> UpstreamTLSContext? {
    if let made = callbacksUpstream { return made }
    let made = try callbacks.upstreamTLS.map { try upstream($0, use: "callbacks-upstream") }
    callbacksUpstream = .some(made)
    return made
  }

  private mutating func keep(_ material: TLSMaterial) {
    materials.removeAll { $0.use == material.use }  // a reload's new files replace the old ones
    materials.append(material)
  }
}
