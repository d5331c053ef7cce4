import BinduContract
import BinduDataPath
import BinduMeshConfig
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Keeps every pool registered with one Bindu core: the mesh is the agent to the core. With
/// several cores there is one registrar per core (``CoreRegistrars``), each on its own.
///
/// For each pool with a definition it calls `RegisterAgent` with the pool's callback address,
/// then `Heartbeat` every `core.heartbeat_interval`, and at once when its idle TCP connection to
/// the core closes (``CoreWatch``: a restarting core closes it). An `acknowledged=false` answer
/// or an unreachable core (a restarted core) makes it register again, with backoff, until the
/// core answers; connections to a core that is down are tried at most every
/// `core.retry_max_backoff`, so a core that comes back is registered with within about that
/// time. On graceful shutdown it calls `UnregisterAgent` for each pool. Start it before the
/// listeners so it stops after them.
package final class CoreRegistrar: Service, Sendable {
  /// The core, and the agent URL it is given.
  package let target: MeshConfig.CoreTarget
  private let config: MeshConfig.Core
  private let logger: Logger
  private let registrations = Mutex<[String: PoolRegistration]>([:])
  private let newRegistrations: AsyncStream<PoolRegistration>
  private let newRegistrationsContinuation: AsyncStream<PoolRegistration>.Continuation

  private let metrics: MeshMetrics
  private let handedOver: HandedOver
  private let tracer: MeshTracer?

  private let security: HTTP2ClientTransport.Posix.TransportSecurity
  private let eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

  init(
    target: MeshConfig.CoreTarget, config: MeshConfig.Core, security: HTTP2ClientTransport.Posix.TransportSecurity,
    metrics: MeshMetrics, handedOver: HandedOver, tracer: MeshTracer? = nil, logger: Logger
  ) {
    self.handedOver = handedOver
    self.tracer = tracer
    self.target = target
    self.config = config
    self.security = security
    self.metrics = metrics
    self.logger = logger.with("mesh.core", "\(target.address)")
    (newRegistrations, newRegistrationsContinuation) = AsyncStream.makeStream()
  }

  /// The registration of `agent`'s pool, if one was started.
  package func registration(forAgent agent: String) -> PoolRegistration? {
    registrations.withLock { $0[agent] }
  }

  /// The registration of `entry`'s pool, started with `definition` if there is none yet.
  func register(
    _ entry: PoolDirectory.Entry, definition: AgentDefinition
  ) -> (registration: PoolRegistration, isNew: Bool) {
    let (registration, isNew) = registrations.withLock { registrations in
      if let existing = registrations[entry.pool.name] { return (existing, false) }
      let made = PoolRegistration(
        entry: entry, definition: definition, core: target.address,
        configJSON: definition.configJSON(agentURL: target.agentURL))
      registrations[entry.pool.name] = made
      return (made, true)
    }
    if isNew { newRegistrationsContinuation.yield(registration) }
    return (registration, isNew)
  }

  /// Ends the registration of `agent`'s pool (removed, or moved by a reload): no more
  /// heartbeats, and the agent is unregistered from the core.
  /// Returns once the core has answered the unregistration (or `core.call_timeout` passed).
  func retire(agent: String) async {
    guard let retired = registrations.withLock({ $0.removeValue(forKey: agent) }) else { return }
    retired.retire()
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await retired.untilEnded() }
      group.addTask { try? await Task.sleep(for: self.config.callTimeout * 2) }
      await group.next()
      group.cancelAll()
    }
  }

  /// Drops a registration the core refused, so a later replica can start a new one.
  func forget(_ registration: PoolRegistration) {
    registrations.withLock { registrations in
      if registrations[registration.entry.pool.name] === registration {
        registrations[registration.entry.pool.name] = nil
      }
    }
  }

  package func run() async throws {
    var transportConfig = HTTP2ClientTransport.Posix.Config.defaults
    // grpc-swift's own reconnect backoff (up to two minutes by default) would hide a core that
    // is back: keep it within the registrar's.
    transportConfig.backoff = .init(
      initial: config.retryInitialBackoff, max: config.retryMaxBackoff, multiplier: 2, jitter: 0.1)
    // The name the core's certificate must carry (and the SNI): `core.tls.server_name`, else
    // the host; an IP address is dialled as one, so that NIOSSL checks the certificate's IP SANs
    // against it (an IP cannot be an SNI name).
    if let serverName = config.tls?.serverName { transportConfig.http2.authority = serverName }
    let address = target.address
    let resolvable = address.resolvableTarget
    let transport = try HTTP2ClientTransport.Posix(
      target: resolvable,
      transportSecurity: security,
      config: transportConfig
    )
    try await withGRPCClient(transport: transport) { client in
      let core = Bindu_Grpc_BinduService.Client(wrapping: client)
      await withTaskGroup(of: Void.self) { group in
        for await registration in newRegistrations.cancelOnGracefulShutdown() {
          group.addTask {
            // Until the mesh stops, or a reload retires the registration (then it unregisters).
            await withTaskGroup(of: Void.self) { one in
              one.addTask { await self.keepRegistered(registration, core: core) }
              one.addTask { await registration.untilRetired() }
              await one.next()
              one.cancelAll()
            }
            if registration.isRetired { await self.unregister(registration, core: core) }
            registration.end()
          }
        }
        group.cancelAll()
      }
      await unregisterAll(core: core)
    }
  }

  private var callOptions: CallOptions {
    var options = CallOptions.defaults
    options.timeout = config.callTimeout
    options.waitForReady = false
    return options
  }

  /// A registration waits, within its deadline, for a connection to a core that is coming back.
  private var registerOptions: CallOptions {
    var options = callOptions
    options.waitForReady = true
    return options
  }

  /// Why the registrar sends a heartbeat.
  private enum HeartbeatReason: Sendable {
    case due
    case connectionClosed
  }

  /// Registers, heartbeats, and registers again whenever the core forgets the agent.
  private func keepRegistered(
    _ registration: PoolRegistration, core: Bindu_Grpc_BinduService.Client<HTTP2ClientTransport.Posix>
  ) async {
    let pool = registration.entry.pool.name
    let logger = self.logger.with("mesh.pool", pool)
    var backoff = config.retryInitialBackoff
    var lostAt: ContinuousClock.Instant? = nil
    var attempts = 0
    while !Task.isCancelled {
      attempts += 1
      let request = Bindu_Grpc_RegisterAgentRequest.with {
        $0.configJson = registration.configJSON
        $0.skills = registration.definition.skills
        $0.grpcCallbackAddress = registration.entry.callbackAddress.description
      }
      let trace = RegistrationTrace.toCore(
        tracer, core: target.address, pool: pool, callback: registration.entry.callbackAddress, attempt: attempts)
      do {
        let response: Bindu_Grpc_RegisterAgentResponse
        do {
          response = try await measured(pool, Bindu_Grpc_BinduService.Method.RegisterAgent.descriptor) {
            try await core.registerAgent(request, metadata: trace.metadata(), options: registerOptions)
          }
        } catch let error as RPCError where !Self.isTransient(error.code) {
          // The core ran the registration and failed on it: as much a refusal as success=false.
          response = .with { $0.error = "\(error.code): \(error.message)" }
        } catch {
          trace.failed(error)
          throw error
        }
        trace.ended(success: response.success, reason: response.error)
        guard response.success else {
          registration.update(.refused(response.error))
          logger.error("the core refused the agent", metadata: ["error": "\(response.error)"])
          if !registration.entry.pool.declared {
            forget(registration)
            return
          }
          // A refusal is about the config: asking again often changes nothing.
          try await Task.sleep(for: config.heartbeatInterval)
          continue
        }
        registration.update(.registered(agentID: response.agentID, did: response.did, agentURL: response.agentURL))
        metrics.counter("core_registrations_total", [("pool", pool), ("core", "\(target.address)")]).increment()
        var metadata: Logger.Metadata = [
          "mesh.agent_id": "\(response.agentID)", "mesh.did": "\(response.did)", "mesh.agent_url": "\(response.agentURL)",
          "mesh.callback": "\(registration.entry.callbackAddress)", "mesh.attempts": "\(attempts)",
        ]
        if let lostAt {
          metadata["mesh.recovery_seconds"] = "\((ContinuousClock.now - lostAt).secondsValue)"
          logger.notice("registered with the core again", metadata: metadata)
        } else {
          logger.notice("registered with the core", metadata: metadata)
        }
        backoff = config.retryInitialBackoff
        attempts = 0
        try await heartbeat(response.agentID, pool: pool, core: core, logger: logger)
        lostAt = .now
        registration.update(.pending(lastError: "the core no longer knows the agent"))
      } catch is CancellationError {
        return
      } catch {
        if Task.isCancelled { return }
        registration.update(.pending(lastError: "\(error)"))
        lostAt = lostAt ?? .now
        let level: Logger.Level = attempts == 1 ? .warning : .info
        logger.log(
          level: level, "waiting for the core to accept the agent",
          metadata: ["error": "\(error)", "mesh.attempts": "\(attempts)", "mesh.retry_in": "\(backoff)"])
        do { try await Task.sleep(for: backoff) } catch { return }
        backoff = min(backoff * 2, config.retryMaxBackoff)
      }
    }
  }

  /// Heartbeats every `heartbeat_interval`, and at once when the watch connection to the core
  /// closes, until the core says it does not know the agent or cannot be reached (returns) or the
  /// task is cancelled (throws `CancellationError`).
  private func heartbeat(
    _ agentID: String, pool: String, core: Bindu_Grpc_BinduService.Client<HTTP2ClientTransport.Posix>, logger: Logger
  ) async throws {
    let (reasons, reasonsContinuation) = AsyncStream.makeStream(
      of: HeartbeatReason.self, bufferingPolicy: .bufferingNewest(1))
    try await withThrowingTaskGroup(of: Void.self) { group in
      defer { group.cancelAll() }
      group.addTask {
        while true {
          try await Task.sleep(for: self.config.heartbeatInterval)
          reasonsContinuation.yield(.due)
        }
      }
      group.addTask {
        while true {
          await CoreWatch.untilClosed(self.target.address, group: self.eventLoopGroup, connectTimeout: self.config.callTimeout)
          try Task.checkCancellation()
          reasonsContinuation.yield(.connectionClosed)
          try await Task.sleep(for: self.config.retryInitialBackoff)
        }
      }
      for await reason in reasons {
        if reason == .connectionClosed {
          logger.debug("the connection to the core closed; checking that it still knows the agent")
        }
        let request = Bindu_Grpc_HeartbeatRequest.with {
          $0.agentID = agentID
          $0.timestamp = Int64(Date().timeIntervalSince1970 * 1000)
        }
        do {
          let response = try await measured(pool, Bindu_Grpc_BinduService.Method.Heartbeat.descriptor) {
            try await core.heartbeat(request, options: callOptions)
          }
          if !response.acknowledged {
            logger.warning("the core does not know the agent any more (restarted?); registering again")
            return
          }
        } catch let error as RPCError where Self.isTransient(error.code) && error.code != .cancelled {
          logger.warning("the core is unreachable; registering again", metadata: ["error": "\(error)"])
          return
        } catch let error as RPCError {
          if Task.isCancelled { break }
          logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
        }
      }
      throw CancellationError()
    }
  }

  private func unregisterAll(core: Bindu_Grpc_BinduService.Client<HTTP2ClientTransport.Posix>) async {
    let all = registrations.withLock { Array($0.values) }
    for registration in all {
      // After a hand-over the new process serves the agent: the core must keep it.
      if handedOver.keepsRegistered(registration.entry.pool.name) {
        logger.notice(
          "handed over: the agent stays registered with the core",
          metadata: ["mesh.pool": "\(registration.entry.pool.name)"])
        continue
      }
      await unregister(registration, core: core)
    }
  }

  private func unregister(
    _ registration: PoolRegistration, core: Bindu_Grpc_BinduService.Client<HTTP2ClientTransport.Posix>
  ) async {
    guard case .registered(let agentID, _, _) = registration.phase else { return }
    let logger = self.logger.with("mesh.pool", registration.entry.pool.name)
    do {
      let response = try await measured(
        registration.entry.pool.name, Bindu_Grpc_BinduService.Method.UnregisterAgent.descriptor
      ) {
        try await core.unregisterAgent(.with { $0.agentID = agentID }, options: callOptions)
      }
      if response.success {
        logger.notice("unregistered from the core", metadata: ["mesh.agent_id": "\(agentID)"])
      } else {
        logger.warning("the core refused to unregister the agent", metadata: ["error": "\(response.error)"])
      }
    } catch {
      logger.warning("cannot unregister from the core", metadata: ["error": "\(error)"])
    }
  }

  /// Runs one unary call to the core, recording its client metrics.
  private func measured<Response: Sendable>(
    _ pool: String, _ method: MethodDescriptor, _ call: () async throws -> Response
  ) async throws -> Response {
    let call_ = metrics.client(pool: pool, endpoint: target.address.description, path: "/" + method.fullyQualifiedMethod)
    call_.started.increment()
    call_.messagesSent.increment()
    let started = ContinuousClock.now
    do {
      let response = try await call()
      call_.messagesReceived.increment()
      call_.finished(code: 0, after: .now - started)
      return response
    } catch {
      call_.finished(code: ServerMetricsInterceptor.code(of: error), after: .now - started)
      throw error
    }
  }

  /// Codes after which the same registration may succeed later (the core is down or busy).
  static func isTransient(_ code: RPCError.Code) -> Bool {
    [.unavailable, .deadlineExceeded, .resourceExhausted, .aborted, .cancelled].contains(code)
  }

}
