import BinduDataPath
import BinduMeshConfig

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#else
  import Darwin
#endif

/// A listener of the mesh whose address another process holds: which setting asked for it, what
/// holds it and what that speaks, and so what to do. The text is the whole diagnosis; finding
/// the facts is ``find(key:address:)``'s.
package struct ListenerConflict: Sendable, Hashable, CustomStringConvertible {
  /// The setting that gave the address (`registry.listen`, `admin.listen`, a pool's listener).
  package var key: String
  package var address: HostPort
  /// The process that listens there, when the mesh may see it.
  package var holder: PortHolder?
  /// What answers there.
  package var speaker: PortSpeaker

  package init(key: String, address: HostPort, holder: PortHolder?, speaker: PortSpeaker) {
    self.key = key
    self.address = address
    self.holder = holder
    self.speaker = speaker
  }

  /// Looks at what holds `address`: the process (from `/proc`) and one probe of what it speaks.
  package static func find(key: String, address: HostPort) async -> ListenerConflict {
    ListenerConflict(
      key: key, address: address, holder: PortHolder.find(port: address.port), speaker: await PortSpeaker.probe(address))
  }

  package var description: String {
    let who = holder.map { "\($0)" } ?? "a process this user cannot see (`ss -ltnp 'sport = :\(address.port)'` as root names it)"
    let speaks =
      switch speaker {
      case .binduService: "which answers BinduService"
      case .otherGRPC: "which answers gRPC but not BinduService"
      case .notGRPC(let reason): "which does not answer gRPC in plaintext (\(reason))"
      }
    return "\(key) \(address) is taken by \(who), \(speaks): \(advice)"
  }

  /// What to do about it.
  private var advice: String {
    let move = "or set \(key) to a free port"
    if holder?.isMesh == true {
      return "another bindu-mesh listens there. Stop it, start this one with --take-over and the other's state.dir "
        + "to take over from it, \(move)"
    }
    guard speaker == .binduService else {
      return "stop that process, \(move)"
    }
    guard key == "registry.listen" else {
      return "a Bindu core. Stop it, or give the core or the mesh another port (\(key))"
    }
    return """
      a Bindu core, where the replicas should find the mesh. An SDK started before the mesh starts a core of \
      its own on its coreAddress when `bindu` is on its PATH (the TypeScript SDK does), and that core takes this \
      port. Stop that process and start bindu-mesh before the SDKs (docs/deployment.md, "Start order"), or take \
      `bindu` off the SDKs' PATH; if the agent's core is meant to listen there, give the mesh another \
      registry.listen and the SDKs that port as their coreAddress
      """
  }
}

extension ListenerConflict {
  /// Throws ``MeshError/listenerTaken(_:)``, with the diagnosis, or
  /// ``MeshError/cannotListen(key:address:reason:)`` when one of `listeners` cannot bind now;
  /// a port of 0 always can.
  static func checkFree(_ listeners: [(key: String, address: HostPort)]) async throws {
    for (key, address) in listeners where address.port != 0 {
      do {
        close(try ListeningSocket.open(address, backlog: 1))
      } catch let error as SocketError where error.isAddressInUse {
        throw MeshError.listenerTaken(await find(key: key, address: address))
      } catch {
        throw MeshError.cannotListen(key: key, address: address, reason: "\(error)")
      }
    }
  }
}
