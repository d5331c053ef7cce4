import BinduMeshConfig
import GRPCCore

/// Errors of the mesh that reach a user: at start-up, or as a gRPC status to a caller.
package enum MeshError: Error, CustomStringConvertible, RPCErrorConvertible {
  /// A listener could not bind.
  case listenerFailed(pool: String, address: HostPort, reason: String)
  /// Another process holds the address of the registry or admin listener.
  case listenerTaken(ListenerConflict)
  /// The registry or admin listener cannot bind for another reason (`key` is its setting).
  case cannotListen(key: String, address: HostPort, reason: String)
  /// No more pools may be made by registration.
  case tooManyPools(limit: Int)
  /// A pool's agent cannot be registered as configured (with several cores, in-memory storage).
  case poolRefused(pool: String, reason: String)
  /// Another mesh runs with the same state directory.
  case alreadyRunning(stateDir: String)

  package var description: String {
    switch self {
    case .listenerFailed(let pool, let address, let reason):
      "cannot listen on \(address) for pool \"\(pool)\": \(reason)"
    case .listenerTaken(let conflict):
      "cannot listen: \(conflict)"
    case .cannotListen(let key, let address, let reason):
      "cannot listen on \(address) (\(key)): \(reason)"
    case .tooManyPools(let limit):
      "the mesh already serves \(limit) pools made by registration (callbacks.max_pools)"
    case .poolRefused(let pool, let reason):
      "pool \"\(pool)\" cannot be registered: \(reason)"
    case .alreadyRunning(let stateDir):
      "another bindu-mesh runs with the state directory \(stateDir) (it answers on "
        + "\(HandOver.socketPath(stateDir: stateDir))): stop it, or start this one with --take-over to take over from it"
    }
  }

  package var rpcErrorCode: RPCError.Code {
    switch self {
    case .listenerFailed, .listenerTaken, .cannotListen: .unavailable
    case .tooManyPools: .resourceExhausted
    case .poolRefused: .failedPrecondition
    case .alreadyRunning: .failedPrecondition
    }
  }

  package var rpcErrorMessage: String { description }
}
