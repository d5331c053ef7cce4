import BinduContract
import BinduDataPath
import BinduMeshConfig
import Foundation
import GRPCCore
import Logging

/// `BinduService` for replicas: the mesh is the core to them.
///
/// `RegisterAgent` puts the replica in its agent's pool (made on first use), has the mesh
/// register that agent with every core if it is not yet, and answers, once a core has accepted
/// it, with that core's DID and URL and a membership id for this replica. `Heartbeat` and `UnregisterAgent` act on that one
/// membership. Every refusal is `success=false` with a reason, never a crash.
struct RegistryService: Bindu_Grpc_BinduService.SimpleServiceProtocol {
  let directory: PoolDirectory
  let registrars: CoreRegistrars
  let config: MeshConfig.Registry
  /// The registry shared with other meshes, if any.
  let shared: SharedRegistry?
  /// Spans of registrations, when tracing is on.
  var tracer: MeshTracer? = nil
  let logger: Logger

  func registerAgent(
    request: Bindu_Grpc_RegisterAgentRequest, context: ServerContext
  ) async throws -> Bindu_Grpc_RegisterAgentResponse {
    // A new process is taking over and has read the state file: this one must not change it.
    guard !directory.handedOver.refusesRegistrations else {
      throw RPCError(code: .unavailable, message: "bindu-mesh is handing over to a new process: register again in a moment")
    }
    let trace = RegistrationTrace.fromReplica(tracer, peer: context.remotePeer, callback: request.grpcCallbackAddress)
    do {
      let response = try await register(request, peer: context.remotePeer, trace: trace)
      trace.ended(success: true)
      return response
    } catch let refusal as Refusal {
      trace.ended(success: false, reason: refusal.reason)
      logger.warning(
        "registration refused",
        metadata: ["mesh.peer": "\(context.remotePeer)", "reason": "\(refusal.reason)"])
      return .with {
        $0.success = false
        $0.error = refusal.reason
      }
    } catch {
      trace.failed(error)
      throw error
    }
  }

  private func register(
    _ request: Bindu_Grpc_RegisterAgentRequest, peer: String, trace: RegistrationTrace
  ) async throws -> Bindu_Grpc_RegisterAgentResponse {
    let definition: AgentDefinition
    do {
      definition = try AgentDefinition(configJSON: request.configJson, skills: request.skills)
    } catch {
      throw Refusal(reason: error.reason)
    }
    trace.agent(definition.name)
    guard let given = HostPort(parsing: request.grpcCallbackAddress), given.port != 0 else {
      throw Refusal(reason: "grpc_callback_address \"\(request.grpcCallbackAddress)\" is not host:port with a port 1-65535")
    }
    let callback = try reachableAddress(given, peer: peer)
    if case .refused(let reason) = registrars.check(definition) { throw Refusal(reason: reason) }

    let entry: PoolDirectory.Entry
    do {
      entry = try await directory.pool(forAgent: definition.name)
    } catch {
      throw Refusal(reason: "\(error)")
    }
    if let reason = await shared?.conflict(with: definition) { throw Refusal(reason: reason) }
    let membershipID = UUID().uuidString.lowercased()
    let endpoint = entry.pool.makeRegisteredEndpoint(callback, membershipID: membershipID)
    shared?.joining(membershipID)
    if case .refused(let reason) = entry.pool.join(membershipID: membershipID, endpoint: endpoint, definition: definition) {
      shared?.abandoned(membershipID)
      throw Refusal(reason: reason)
    }
    // Probe once before answering, so the replica takes calls as soon as it is told it may.
    let probe = await HealthProbe.run(endpoint, pool: entry.pool)
    entry.pool.observeProbe(endpoint, passed: probe.passed, message: probe.message)
    let poolDefinition = entry.pool.definition ?? definition
    let registrations = registrars.register(entry, definition: poolDefinition)
    let phases = await registrars.settled(registrations, within: config.coreWait)
    let accepted = phases.lazy.compactMap { phase -> (did: String, url: String)? in
      if case .registered(_, let did, let url) = phase { return (did, url) }
      return nil
    }.first
    if let (did, url) = accepted {
      let replaced = entry.pool.replaceMembers(at: callback, with: membershipID)
      if !replaced.isEmpty {
        logger.notice(
          "replica registered again at the same address: its earlier membership is replaced",
          metadata: [
            "mesh.pool": "\(definition.name)", "mesh.replica": "\(callback)", "mesh.member": "\(membershipID)",
            "mesh.replaced": "\(replaced.joined(separator: ","))",
          ])
      }
      shared?.joined(
        membershipID, agent: definition.name, address: callback, definition: poolDefinition, replaced: replaced)
      await directory.persist()
      logger.notice(
        "replica joined",
        metadata: [
          "mesh.pool": "\(definition.name)", "mesh.replica": "\(callback)", "mesh.member": "\(membershipID)",
          "mesh.size": "\(entry.pool.endpoints.count)",
        ])
      return .with {
        $0.success = true
        $0.agentID = membershipID
        $0.did = did
        $0.agentURL = url
      }
    }
    entry.pool.leave(membershipID: membershipID)
    shared?.abandoned(membershipID)
    let agent = "agent \"\(definition.name)\""
    let cores = zip(registrations, phases).map { registration, phase -> String in
      let core = registrars.count == 1 ? "the core" : "core \(registration.core)"
      return switch phase {
      case .refused(let error): "\(core) refused \(agent): \(error)"
      case .pending(let error): "\(core) has not accepted \(agent) within \(config.coreWait): \(error ?? "no answer yet")"
      case .registered: "\(core) accepted \(agent)"
      }
    }
    if phases.allSatisfy({ if case .refused = $0 { true } else { false } }) {
      entry.pool.forgetDefinitionIfUnused(definition)
    }
    throw Refusal(reason: cores.joined(separator: "; "))
  }

  func heartbeat(request: Bindu_Grpc_HeartbeatRequest, context: ServerContext) async throws -> Bindu_Grpc_HeartbeatResponse {
    let known = await directory.pool(withMember: request.agentID)?.heartbeat(membershipID: request.agentID) ?? false
    if !known {
      logger.info("heartbeat for an unknown agent_id", metadata: ["mesh.member": "\(request.agentID)"])
    }
    return .with {
      $0.acknowledged = known
      $0.serverTimestamp = Int64(Date().timeIntervalSince1970 * 1000)
    }
  }

  func unregisterAgent(
    request: Bindu_Grpc_UnregisterAgentRequest, context: ServerContext
  ) async throws -> Bindu_Grpc_UnregisterAgentResponse {
    guard let pool = await directory.pool(withMember: request.agentID), pool.leave(membershipID: request.agentID) else {
      return .with {
        $0.success = false
        $0.error = "unknown agent_id \"\(request.agentID)\""
      }
    }
    shared?.left(request.agentID)
    await directory.persist()
    logger.notice(
      "replica left",
      metadata: ["mesh.pool": "\(pool.name)", "mesh.member": "\(request.agentID)", "mesh.size": "\(pool.endpoints.count)"])
    return .with { $0.success = true }
  }

  /// Where the replica really is: a loopback or wildcard callback host sent from another host is
  /// replaced by the peer's IP, or, with `rewrite_loopback_callbacks` off, refused (the mesh
  /// could not reach it there).
  ///
  /// With a shared registry, such a callback sent over loopback (a replica of this host) is
  /// recorded at `registry.advertise_host`, where the other meshes reach it; without that key it
  /// is kept as sent, with a warning.
  private func reachableAddress(_ given: HostPort, peer: String) throws -> HostPort {
    guard given.isLoopback || given.isWildcard, let peerHost = Self.peerHost(peer) else { return given }
    if HostPort(host: peerHost, port: 0).isLoopback {
      guard let shared = config.shared else { return given }
      guard let advertised = shared.advertiseHost else {
        logger.warning(
          """
          a replica of this host registered with a loopback callback address: the other meshes sharing the \
          registry will dial it on their own hosts (set registry.advertise_host to this host's name)
          """,
          metadata: ["mesh.given": "\(given)"])
        return given
      }
      let rewritten = HostPort(host: advertised, port: given.port)
      logger.notice(
        "callback address recorded at this host's advertised name", metadata: ["mesh.given": "\(given)", "mesh.used": "\(rewritten)"])
      return rewritten
    }
    guard config.rewriteLoopbackCallbacks else {
      throw Refusal(
        reason: "grpc_callback_address \"\(given)\" is a loopback or wildcard address but the replica connected "
          + "from \(peerHost): this mesh cannot reach it there (registry.rewrite_loopback_callbacks is off; "
          + "send an address this mesh can reach, or turn the rewrite on)")
    }
    let rewritten = HostPort(host: peerHost, port: given.port)
    logger.notice("callback address rewritten to the replica's address", metadata: ["mesh.given": "\(given)", "mesh.used": "\(rewritten)"])
    return rewritten
  }

  /// The IP of a gRPC peer string such as `ipv4:10.0.0.2:5123` or `ipv6:[::1]:5123`.
  static func peerHost(_ peer: String) -> String? {
    if peer.hasPrefix("ipv4:") {
      return HostPort(parsing: String(peer.dropFirst(5)))?.host
    }
    if peer.hasPrefix("ipv6:") {
      return HostPort(parsing: String(peer.dropFirst(5)))?.host
    }
    return nil
  }

  private struct Refusal: Error {
    var reason: String
  }
}
