import BinduMeshConfig
import Foundation

/// Who may change the mesh through the admin listener (draining an endpoint, ...): a caller that
/// sends the bearer token kept in `admin.token_file`. Without that file every change is refused;
/// reading (`/metrics`, `/pools`, the status page, ...) stays open.
///
/// The file is read at each change, so a rotated token takes effect at once.
struct AdminAuthorization: Sendable {
  /// `admin.token_file`.
  let tokenFile: String?

  /// Checks at start that the file, when set, holds a token.
  func check() throws {
    guard let tokenFile else { return }
    _ = try token(tokenFile)
  }

  /// Why a change with this `Authorization` header is refused (403), or `nil` when it may go on.
  func refusal(authorization: String?) -> String? {
    guard let tokenFile else {
      return "changes through the admin listener are off: set admin.token_file to a file holding a bearer token"
    }
    let expected: String
    do { expected = try token(tokenFile) } catch { return "\(error)" }
    guard let authorization, authorization.hasPrefix("Bearer ") else {
      return "a bearer token is needed: send Authorization: Bearer <the token in admin.token_file>"
    }
    guard Self.equalInConstantTime(Array(authorization.utf8.dropFirst(7)), Array(expected.utf8)) else {
      return "the bearer token is not the one in admin.token_file"
    }
    return nil
  }

  private func token(_ file: String) throws -> String {
    guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
      throw ConfigError(source: file, key: "admin.token_file", message: "cannot read the token file")
    }
    let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
    guard token.count >= 16 else {
      throw ConfigError(source: file, key: "admin.token_file", message: "the token must have at least 16 characters")
    }
    return token
  }

  /// Compares without stopping at the first difference, so the time taken does not tell how
  /// much of a guess was right.
  static func equalInConstantTime(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
    for index in 0..<max(a.count, b.count) {
      difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
    }
    return difference == 0
  }
}
