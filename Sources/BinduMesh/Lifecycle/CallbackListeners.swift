import Logging
import ServiceLifecycle

/// Owns the callback listeners' shutdown: waits for graceful shutdown, then stops every
/// listener and gives calls in flight `shutdown.grace_period` to finish. Listed last in the
/// service group so it stops first.
struct CallbackListeners: Service {
  let directory: PoolDirectory
  let grace: Duration
  let logger: Logger

  func run() async throws {
    try? await gracefulShutdown()
    logger.notice("shutting down: no new calls, waiting for calls in flight", metadata: ["mesh.grace": "\(grace)"])
    await directory.shutdownListeners(grace: grace)
  }
}
