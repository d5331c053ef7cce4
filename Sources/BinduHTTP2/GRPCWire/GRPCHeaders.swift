import GRPCCore
import NIOHPACK

/// Building and reading the few gRPC headers the data path touches.
public enum GRPCHeaders {
  /// A trailers-only response (`:status 200` and a status), for calls the mesh ends itself.
  public static func trailersOnly(_ code: Status.Code, message: String) -> HPACKHeaders {
    var headers = HPACKHeaders()
    headers.reserveCapacity(4)
    headers.add(name: ":status", value: "200")
    headers.add(name: "content-type", value: "application/grpc")
    headers.add(contentsOf: trailers(code, message: message))
    return headers
  }

  /// Trailers that end a call whose response headers were already sent.
  public static func trailers(_ code: Status.Code, message: String) -> HPACKHeaders {
    var headers = HPACKHeaders()
    headers.add(name: "grpc-status", value: String(code.rawValue))
    if !message.isEmpty { headers.add(name: "grpc-message", value: percentEncode(message)) }
    return headers
  }

  /// The `grpc-status` of trailers (or of a trailers-only response), if present.
  public static func status(of headers: HPACKHeaders) -> Int? {
    headers.first(name: "grpc-status").flatMap { Int($0) }
  }

  /// Percent-encodes a `grpc-message` as the gRPC HTTP/2 spec asks.
  static func percentEncode(_ message: String) -> String {
    var out = ""
    for byte in message.utf8 {
      if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
        out.unicodeScalars.append(UnicodeScalar(byte))
      } else {
        out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
      }
    }
    return out
  }
}

extension String {
  fileprivate func leftPadded(to width: Int) -> String {
    count >= width ? self : String(repeating: "0", count: width - count) + self
  }
}
