/// The gRPC status codes the mesh itself answers with, and the names metrics use.
public enum GRPCStatusCode: Int, Sendable, CaseIterable {
  case ok = 0, cancelled, unknown, invalidArgument, deadlineExceeded, notFound, alreadyExists
  case permissionDenied, resourceExhausted, failedPrecondition, aborted, outOfRange
  case unimplemented, `internal`, unavailable, dataLoss, unauthenticated

  /// The code's canonical name, as in `grpc_code` labels: `OK`, `Unavailable`, ...
  public var name: String {
    switch self {
    case .ok: "OK"
    case .cancelled: "Canceled"
    case .unknown: "Unknown"
    case .invalidArgument: "InvalidArgument"
    case .deadlineExceeded: "DeadlineExceeded"
    case .notFound: "NotFound"
    case .alreadyExists: "AlreadyExists"
    case .permissionDenied: "PermissionDenied"
    case .resourceExhausted: "ResourceExhausted"
    case .failedPrecondition: "FailedPrecondition"
    case .aborted: "Aborted"
    case .outOfRange: "OutOfRange"
    case .unimplemented: "Unimplemented"
    case .internal: "Internal"
    case .unavailable: "Unavailable"
    case .dataLoss: "DataLoss"
    case .unauthenticated: "Unauthenticated"
    }
  }
}
