import BinduMeshConfig
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The admin HTTP listener (Hummingbird): the status page at `/`, `/metrics` in the Prometheus
/// text format, `/healthz` (the process answers), `/readyz` (200 when ready, 503 with the
/// reasons), `/status` (everything the page shows, JSON) and `/pools` (the pools, JSON); and,
/// with the bearer token of `admin.token_file`, `POST /pools/POOL/endpoints/HOST:PORT/drain`
/// and `.../undrain`, and `POST /reload` (read the config file again).
enum AdminServer {
  static func make(
    status: MeshStatus, listen: HostPort, authorization: AdminAuthorization, reloader: ConfigReloader, logger: Logger,
    onListening: @escaping @Sendable (Int) async -> Void
  ) -> some Service {
    let router = Router()
    for (action, drain) in [("drain", true), ("undrain", false)] {
      router.post("pools/:pool/endpoints/:address/\(action)") { request, context -> Response in
        if let refusal = authorization.refusal(authorization: request.headers[.authorization]) {
          logger.warning("admin change refused", metadata: ["reason": "\(refusal)", "mesh.path": "\(request.uri.path)"])
          return text(.forbidden, refusal)
        }
        let pool = context.parameters.get("pool")?.removingPercentEncoding ?? ""
        let given = context.parameters.get("address")?.removingPercentEncoding ?? ""
        guard let address = HostPort(parsing: given) else { return text(.badRequest, "not host:port: \(given)") }
        guard let entry = await status.directory.all.first(where: { $0.pool.name == pool }) else {
          return text(.notFound, "no pool \"\(pool)\"")
        }
        guard entry.pool.setDrained(drain, at: address) > 0 else {
          return text(.notFound, "no endpoint \(address) in pool \"\(pool)\"")
        }
        return text(.ok, "\(action)ed \(address) in pool \"\(pool)\"")
      }
    }
    router.post("reload") { request, _ -> Response in
      if let refusal = authorization.refusal(authorization: request.headers[.authorization]) {
        logger.warning("admin change refused", metadata: ["reason": "\(refusal)", "mesh.path": "\(request.uri.path)"])
        return text(.forbidden, refusal)
      }
      logger.notice("reload asked on the admin listener")
      switch await reloader.reload() {
      case .applied(let change):
        return try json(ReloadAnswer(result: "applied", changes: change.summary, leftForNextStart: change.needsRestart))
      case .refused(let reason):
        var answer = ReloadAnswer(result: "refused", changes: "nothing changed", leftForNextStart: [])
        answer.error = reason
        return try json(answer, status: .unprocessableContent)
      case .noFile:
        return text(.conflict, "the mesh was started without --config: there is no file to reload")
      }
    }
    router.get("metrics") { _, _ -> Response in
      await status.updateGauges()
      return Response(
        status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
        body: .init(byteBuffer: ByteBuffer(string: status.metrics.render())))
    }
    router.get("healthz") { _, _ in "ok\n" }
    router.get("readyz") { _, _ -> Response in
      let (ready, reasons, notes) = await status.readiness()
      var text = ready ? "ready\n" : "not ready:\n" + reasons.map { "- \($0)\n" }.joined()
      text += notes.map { "- note: \($0)\n" }.joined()
      return Response(
        status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8"],
        body: .init(byteBuffer: ByteBuffer(string: text)))
    }
    router.get("pools") { _, _ -> Response in
      try json(await status.pools())
    }
    router.get("status") { _, _ -> Response in
      try json(await status.report())
    }
    router.get("/") { _, _ -> Response in
      Response(
        status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
        body: .init(byteBuffer: ByteBuffer(string: StatusPage.html(await status.report()))))
    }
    var adminLogger = logger
    adminLogger.logLevel = max(logger.logLevel, .notice)
    return Application(
      router: router,
      configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "bindu-mesh"),
      onServerRunning: { channel in
        let port = channel.localAddress?.port ?? listen.port
        logger.info("admin listener ready", metadata: ["mesh.listen": "\(listen.host):\(port)"])
        await onListening(port)
      },
      logger: adminLogger
    )
  }

  private static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
    Response(
      status: status, headers: [.contentType: "text/plain; charset=utf-8"],
      body: .init(byteBuffer: ByteBuffer(string: text + "\n")))
  }

  private static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let data = try StatusReport.encoder().encode(value)
    return Response(
      status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
  }
}

/// The answer to `POST /reload`.
struct ReloadAnswer: Encodable {
  /// `applied` or `refused`.
  var result: String
  /// What changed, in one line.
  var changes: String
  /// Keys changed in the file that take effect at the next start.
  var leftForNextStart: [String]
  /// Why the file was refused.
  var error: String?
}
