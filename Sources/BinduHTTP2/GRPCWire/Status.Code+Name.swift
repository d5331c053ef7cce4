import GRPCCore

extension Status.Code {
  /// The code's canonical name, as in `grpc_code` labels and span statuses: `OK`, `Unavailable`, ...
  public var canonicalName: String {
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
    case .internalError: "Internal"
    case .unavailable: "Unavailable"
    case .dataLoss: "DataLoss"
    case .unauthenticated: "Unauthenticated"
    default: "Code\(rawValue)"
    }
  }

  /// The canonical name of a `grpc-status` value, or `Code<n>` for one gRPC does not define.
  public static func canonicalName(of rawValue: Int) -> String {
    Status.Code(rawValue: rawValue)?.canonicalName ?? "Code\(rawValue)"
  }
}
