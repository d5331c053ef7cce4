import Foundation

/// The process that listens on a TCP port of this host, found in `/proc` (Linux): the listening
/// socket's inode in `/proc/net/tcp` and `tcp6`, then the process with a descriptor on it. Only
/// processes the mesh may look into are seen (its own user's, or every one as root).
package struct PortHolder: Sendable, Hashable, CustomStringConvertible {
  /// The process id.
  package var pid: Int32
  /// Its command line, arguments joined by spaces (cut at 120 characters).
  package var command: String

  package var description: String { "process \(pid) (\(command))" }

  /// Whether the process is a bindu-mesh (its program's file name).
  package var isMesh: Bool {
    command.split(separator: " ").first?.split(separator: "/").last == "bindu-mesh"
  }

  /// The process listening on `port`, or `nil` when none can be seen.
  package static func find(port: Int, proc: String = "/proc") -> PortHolder? {
    var inodes = Set<String>()
    for table in ["net/tcp", "net/tcp6"] {
      if let text = try? String(contentsOfFile: "\(proc)/\(table)", encoding: .utf8) {
        inodes.formUnion(listeningInodes(in: text, port: port))
      }
    }
    guard !inodes.isEmpty else { return nil }
    let files = FileManager.default
    for entry in (try? files.contentsOfDirectory(atPath: proc)) ?? [] {
      guard let pid = Int32(entry), let fds = try? files.contentsOfDirectory(atPath: "\(proc)/\(entry)/fd") else {
        continue
      }
      for fd in fds {
        guard let link = try? files.destinationOfSymbolicLink(atPath: "\(proc)/\(entry)/fd/\(fd)"),
          let inode = socketInode(link), inodes.contains(inode)
        else { continue }
        let raw = (try? Data(contentsOf: URL(fileURLWithPath: "\(proc)/\(entry)/cmdline"))) ?? Data()
        return PortHolder(pid: pid, command: commandLine(raw))
      }
    }
    return nil
  }

  /// The inodes of the sockets listening on `port` in a `/proc/net/tcp` or `tcp6` table (state
  /// `0A`, local port in hex).
  static func listeningInodes(in table: String, port: Int) -> Set<String> {
    var found = Set<String>()
    for line in table.split(separator: "\n").dropFirst() {
      let fields = line.split(separator: " ", omittingEmptySubsequences: true)
      guard fields.count > 9, fields[3] == "0A", let local = fields[1].split(separator: ":").last,
        Int(local, radix: 16) == port, fields[9] != "0"
      else { continue }
      found.insert(String(fields[9]))
    }
    return found
  }

  /// The inode of a descriptor's link (`socket:[12345]`), `nil` for anything but a socket.
  static func socketInode(_ link: String) -> String? {
    guard link.hasPrefix("socket:["), link.hasSuffix("]") else { return nil }
    return String(link.dropFirst("socket:[".count).dropLast())
  }

  /// A `/proc/PID/cmdline` (arguments ended by NUL) as one line, at most 120 characters.
  static func commandLine(_ raw: Data) -> String {
    let line = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
      .split(whereSeparator: \.isNewline).joined(separator: " ")
    if line.isEmpty { return "no command line" }
    return line.count > 120 ? String(line.prefix(117)) + "..." : line
  }
}
