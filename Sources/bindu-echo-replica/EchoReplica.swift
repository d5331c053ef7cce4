import ArgumentParser
import BinduContract
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import UnixSignals

/// An `AgentHandler` replica for demos, tests and benchmarks.
///
/// `HandleMessages` answers `[<name>] <last message>`; `HandleMessagesStream` sends one chunk per
/// word of the last message (`flood:<n>`: n messages of 64 KiB). A last message `sleep:<ms> ...`
/// waits that long first. Request metadata `x-echo-*` comes back as response metadata. With `--core`, it registers with that
/// address (a Bindu core or bindu-mesh) as an SDK does, heartbeats, and unregisters on SIGTERM.
/// `--heartbeat-interval 0 --no-unregister` behaves like the Kotlin SDK (registers once, never
/// heartbeats, never unregisters); `--no-unregister` alone like the TypeScript SDK (heartbeats,
/// ignores the answer, never registers again). `--call-log FILE` appends `begin <name>` and
/// `end <name>` for each call to a file that several replicas may share: the order of its lines
/// shows which calls ran at the same time, without a clock.
@main
struct EchoReplica: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bindu-echo-replica", abstract: "An echo AgentHandler replica.")

  @Option(help: "Replica name, put in every answer.") var name = "replica"
  @Option(help: "Listen address for AgentHandler, host:port (port 0: any).") var listen = "127.0.0.1:0"
  @Option(help: "Register with this BinduService (core or mesh), host:port.") var core: String?
  @Option(help: "The agent's config JSON sent with the registration.")
  var agentConfig =
    #"{"author":"dev@example.com","name":"echo-agent","description":"echo agent","deployment":{"url":"http://localhost:3773","expose":true}}"#
  @Option(help: "Seconds between heartbeats; 0 sends none.") var heartbeatInterval = 30.0
  @Option(help: "Host given in the callback address.") var callbackHost = "localhost"
  @Option(help: "While this file exists, HealthCheck answers healthy=false.") var unhealthyFile: String?
  @Flag(help: "Print a line for every HandleMessages / HandleMessagesStream call.") var logCalls = false
  @Flag(help: "Never call UnregisterAgent (as the shipped SDKs).") var noUnregister = false
  @Option(help: "Most streams open at once on a connection (SETTINGS_MAX_CONCURRENT_STREAMS); default: grpc-swift's.")
  var maxConcurrentStreams: Int?
  @Option(help: "Append 'begin <name>' and 'end <name>' for every call to this file (replicas may share it).")
  var callLog: String?
  @Option(help: "Serve TLS with this certificate chain (PEM).") var tlsCert: String?
  @Option(help: "The TLS private key (PEM).") var tlsKey: String?
  @Option(help: "Require client certificates signed by this CA (PEM).") var tlsClientCa: String?

  func run() async throws {
    // Trap SIGTERM/SIGINT before anything starts, so a signal that comes early still unregisters.
    let signals = await SignalStream()
    let parts = listen.split(separator: ":")
    var security = HTTP2ServerTransport.Posix.TransportSecurity.plaintext
    if let tlsCert, let tlsKey {
      security = .tls(
        .defaults(certificateChain: [.file(path: tlsCert, format: .pem)], privateKey: .file(path: tlsKey, format: .pem)) {
          if let ca = tlsClientCa {
            $0.clientCertificateVerification = .noHostnameVerification
            $0.trustRoots = .certificates([.file(path: ca, format: .pem)])
          }
        })
    }
    var transportConfig = HTTP2ServerTransport.Posix.Config.defaults
    transportConfig.http2.maxConcurrentStreams = maxConcurrentStreams
    let server = GRPCServer(
      transport: .http2NIOPosix(
        address: .ipv4(host: String(parts[0]), port: Int(parts[1]) ?? 0), transportSecurity: security,
        config: transportConfig),
      services: [EchoHandler(name: name, unhealthyFile: unhealthyFile, logCalls: logCalls, callLog: try callLog.map(CallLog.init))]
    )
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask { try await server.serve() }
      guard let address = try await server.listeningAddress?.ipv4 else { throw ExitCode.failure }
      say("listening on \(address.host):\(address.port)")
      if let core {
        group.addTask {
          try await register(core: core, port: address.port, stop: signals)
          server.beginGracefulShutdown()
        }
      } else {
        group.addTask {
          await signals.wait()
          server.beginGracefulShutdown()
        }
      }
    }
  }

  private func register(core: String, port: Int, stop: SignalStream) async throws {
    let parts = core.split(separator: ":")
    try await withGRPCClient(
      transport: .http2NIOPosix(
        target: .dns(host: String(parts[0]), port: Int(parts[1]) ?? 3774), transportSecurity: .plaintext)
    ) { client in
      let service = Bindu_Grpc_BinduService.Client(wrapping: client)
      let response = try await service.registerAgent(
        .with {
          $0.configJson = agentConfig
          $0.grpcCallbackAddress = "\(callbackHost):\(port)"
        })
      let json = try JSONSerialization.data(withJSONObject: [
        "success": response.success, "agent_id": response.agentID, "did": response.did,
        "agent_url": response.agentURL, "error": response.error,
      ])
      say("registered \(String(decoding: json, as: UTF8.self))")
      if !response.success {
        await stop.wait()
        return
      }
      await withTaskGroup(of: Void.self) { group in
        if heartbeatInterval > 0 {
          group.addTask {
            while !Task.isCancelled {
              try? await Task.sleep(for: .seconds(heartbeatInterval))
              // The answer is ignored, as the TypeScript SDK does.
              _ = try? await service.heartbeat(.with { $0.agentID = response.agentID })
            }
          }
        }
        await stop.wait()
        group.cancelAll()
      }
      if noUnregister { return }
      let bye = try await service.unregisterAgent(.with { $0.agentID = response.agentID })
      say("unregistered success=\(bye.success)")
    }
  }
}

/// Waits for SIGTERM or SIGINT.
struct SignalStream: Sendable {
  private let signals: UnixSignalsSequence

  /// Installs the handlers now.
  init() async {
    signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
  }

  func wait() async {
    for await _ in signals { return }
  }
}



struct EchoHandler: Bindu_Grpc_AgentHandler.ServiceProtocol {
  let name: String
  let unhealthyFile: String?
  let logCalls: Bool
  let callLog: CallLog?

  func handleMessages(
    request: ServerRequest<Bindu_Grpc_HandleRequest>, context: ServerContext
  ) async throws -> ServerResponse<Bindu_Grpc_HandleResponse> {
    let text = try await prepare(request.message)
    let reply = Bindu_Grpc_HandleResponse.with {
      $0.content = "[\(name)] \(text)"
      $0.metadata = ["replica": name]
    }
    return ServerResponse(message: reply, metadata: echoedMetadata(request.metadata), trailingMetadata: ["x-replica": "\(name)"])
  }

  func handleMessagesStream(
    request: ServerRequest<Bindu_Grpc_HandleRequest>, context: ServerContext
  ) async throws -> StreamingServerResponse<Bindu_Grpc_HandleResponse> {
    let text = try await prepare(request.message)
    if text.hasPrefix("flood:"), let count = Int(text.dropFirst(6)) {
      return flood(count, metadata: echoedMetadata(request.metadata))
    }
    let words = text.split(separator: " ").map(String.init)
    return StreamingServerResponse(metadata: echoedMetadata(request.metadata)) { writer in
      for (index, word) in words.enumerated() {
        try await writer.write(
          .with {
            $0.content = word
            $0.isFinal = index == words.count - 1
            $0.metadata = ["replica": name, "index": "\(index)"]
          })
      }
      return ["x-replica": "\(name)"]
    }
  }

  /// `count` messages of 64 KiB each, as fast as the stream takes them.
  private func flood(_ count: Int, metadata: Metadata) -> StreamingServerResponse<Bindu_Grpc_HandleResponse> {
    let chunk = String(repeating: "x", count: 64 * 1024)
    return StreamingServerResponse(metadata: metadata) { writer in
      for index in 0..<count {
        try await writer.write(.with {
          $0.content = chunk
          $0.isFinal = index == count - 1
          $0.metadata = ["index": "\(index)"]
        })
      }
      return ["x-replica": "\(name)"]
    }
  }

  func getCapabilities(
    request: ServerRequest<Bindu_Grpc_GetCapabilitiesRequest>, context: ServerContext
  ) async throws -> ServerResponse<Bindu_Grpc_GetCapabilitiesResponse> {
    ServerResponse(
      message: .with {
        $0.name = "echo-agent"
        $0.description_p = "echo replica \(name)"
        $0.supportsStreaming = true
      })
  }

  func healthCheck(
    request: ServerRequest<Bindu_Grpc_HealthCheckRequest>, context: ServerContext
  ) async throws -> ServerResponse<Bindu_Grpc_HealthCheckResponse> {
    let unhealthy = unhealthyFile.map { FileManager.default.fileExists(atPath: $0) } ?? false
    return ServerResponse(message: .with {
      $0.healthy = !unhealthy
      $0.message = unhealthy ? "\(name): \(unhealthyFile!) exists" : name
    })
  }

  /// The last message's text, after its `sleep:<ms>` prefix has been slept; `fail:...` throws INTERNAL,
  /// `unavailable:NAME ...` UNAVAILABLE on the replica named NAME.
  private func prepare(_ request: Bindu_Grpc_HandleRequest) async throws -> String {
    var text = request.messages.last?.content ?? ""
    if logCalls { say("call \(text.prefix(80))") }
    callLog?.append("begin \(name)")
    defer { callLog?.append("end \(name)") }
    if text.hasPrefix("sleep:"), let space = text.firstIndex(of: " ") ?? Optional(text.endIndex),
      let ms = Int(text[text.index(text.startIndex, offsetBy: 6)..<space])
    {
      try await Task.sleep(for: .milliseconds(ms))
      text = String(text[space...]).trimmingCharacters(in: .whitespaces)
    }
    if text.hasPrefix("fail:") {
      throw RPCError(code: .internalError, message: "\(name) failed as asked")
    }
    // `unavailable:NAME ...`: the replica named NAME answers UNAVAILABLE, the others echo.
    if text.hasPrefix("unavailable:"), text.dropFirst(12).prefix(while: { $0 != " " }) == name {
      throw RPCError(code: .unavailable, message: "\(name) unavailable as asked")
    }
    return text
  }

  private func echoedMetadata(_ metadata: Metadata) -> Metadata {
    var echoed: Metadata = ["x-replica": "\(name)"]
    for (key, value) in metadata where key.hasPrefix("x-echo-") {
      if case .string(let string) = value { echoed.addString(string, forKey: key) }
    }
    return echoed
  }
}

/// A file that calls append lines to, shared by replicas: each line goes out in one
/// `write` to a file opened with `O_APPEND`, so lines from several processes never mix.
final class CallLog: Sendable {
  private let fd: Int32

  init(path: String) throws {
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw ValidationError("cannot open --call-log \(path)") }
  }

  func append(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
  }
}

/// Prints a line at once (tests read these lines from a pipe).
func say(_ line: String) {
  FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
