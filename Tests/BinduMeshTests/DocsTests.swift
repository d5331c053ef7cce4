import Foundation
import Testing

@testable import BinduMesh
@testable import BinduMeshConfig

/// The docs name only what exists: every config key they write as `section.key` is one the reader
/// accepts (`ConfigKeys`), every repository path they name is there, and every relative link
/// (with its `#anchor`) leads to a file and heading that exist. The flags are held to the binary
/// by `Tests/e2e/test_docs.py`.
@Suite struct DocsTests {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../..").standardized

  /// README.md, ARCHITECTURE.md and every file of docs/, with their text.
  static let documents: [(path: String, text: String)] = {
    let docs = (try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("docs").path)) ?? []
    let paths = ["README.md", "ARCHITECTURE.md"] + docs.filter { $0.hasSuffix(".md") }.sorted().map { "docs/\($0)" }
    return paths.map { ($0, (try? String(contentsOf: root.appendingPathComponent($0), encoding: .utf8)) ?? "") }
  }()

  /// Paths the docs name that only a run makes (not in a checkout).
  static let madeByRuns: Set<String> = ["Fuzz/findings/", "Fuzz/regressions/"]

  static func codeSpans(_ text: String) -> [String] {
    text.matches(of: /`([^`\n]+)`/).map { String($0.1) }
  }

  static func exists(_ path: String) -> Bool {
    FileManager.default.fileExists(atPath: root.appendingPathComponent(path).path)
  }

  @Test func theDocsExist() {
    #expect(Self.documents.count >= 10)
    #expect(Self.documents.allSatisfy { !$0.text.isEmpty })
  }

  @Test func everyConfigKeyTheDocsNameIsOneTheReaderAccepts() {
    let keys = ConfigKeys.all
    let sections = Set(keys.map { String($0.split(separator: ".")[0]).replacingOccurrences(of: "[]", with: "") })
    var unknown: [String] = []
    for (path, text) in Self.documents {
      for span in Self.codeSpans(text) where span.wholeMatch(of: /[a-z_]+(\[\])?(\.[a-z_]+(\[\])?)+/) != nil {
        let first = String(span.split(separator: ".")[0]).replacingOccurrences(of: "[]", with: "")
        guard sections.contains(first), !span.hasSuffix(".json"), !span.hasSuffix(".tmp") else { continue }
        // A key, or a section that holds keys (`core.tls`, `pools[].balancer`).
        if !keys.contains(span) && !keys.contains(where: { $0.hasPrefix(span + ".") }) {
          unknown.append("\(path): `\(span)`")
        }
      }
    }
    #expect(unknown.isEmpty, "the docs name config keys the reader does not accept: \(unknown)")
  }

  /// The modules (`Sources/*`) and their folders (`Pool`, `HTTP2`): a doc names a source file
  /// from either (`BinduMeshConfig/MeshConfig`, `Pool/ReplicaPool`).
  static let sourceFolders: (modules: [String], folders: Set<String>) = {
    let files = FileManager.default
    let modules = ((try? files.contentsOfDirectory(atPath: root.appendingPathComponent("Sources").path)) ?? []).sorted()
    let folders = modules.flatMap { module in
      ((try? files.contentsOfDirectory(atPath: root.appendingPathComponent("Sources/\(module)").path)) ?? [])
        .filter { !$0.contains(".") }
    }
    return (modules, Set(folders))
  }()

  @Test func everyPathTheDocsNameExists() {
    let roots: Set<String> = [
      "Sources", "Tests", "docs", "Config", "scripts", "Docker", "k8s", "monitoring", "Benchmarks", "examples", "Fuzz",
      "Protos", ".ci",
    ]
    let (modules, folders) = Self.sourceFolders
    #expect(folders.isSuperset(of: ["Pool", "Listener", "Directory", "HTTP2"]))
    var missing: [String] = []
    for (path, text) in Self.documents {
      for span in Self.codeSpans(text) {
        let named = String(span.split(separator: " ")[0])
        let first = String(named.split(separator: "/", omittingEmptySubsequences: false)[0])
        guard named.contains("/"), roots.contains(first) || modules.contains(first) || folders.contains(first),
          !Self.madeByRuns.contains(named)
        else { continue }
        // A repository path, or a source file named from its module or from a module's folder.
        let bases = [""] + ["Sources/"] + modules.map { "Sources/\($0)/" }
        let candidates = bases.flatMap { ["\($0)\(named)", "\($0)\(named).swift"] }
        if !candidates.contains(where: Self.exists) { missing.append("\(path): `\(span)`") }
      }
    }
    #expect(missing.isEmpty, "the docs name files that do not exist: \(missing)")
  }

  @Test func everyRelativeLinkLeadsToAFileAndHeading() {
    var broken: [String] = []
    for (path, text) in Self.documents {
      let folder = (path as NSString).deletingLastPathComponent
      for match in text.matches(of: /\]\(([^)\s]+)\)/) {
        let link = String(match.1)
        guard !link.contains("://"), !link.hasPrefix("mailto:") else { continue }
        let parts = link.split(separator: "#", maxSplits: 1).map(String.init)
        let file = link.hasPrefix("#") ? path : (folder.isEmpty ? parts[0] : "\(folder)/\(parts[0])")
        let target = (file as NSString).standardizingPath
        guard Self.exists(target) else {
          broken.append("\(path): (\(link)): no \(target)")
          continue
        }
        let anchor = link.hasPrefix("#") ? String(link.dropFirst()) : (parts.count > 1 ? parts[1] : nil)
        if let anchor, let body = try? String(contentsOf: Self.root.appendingPathComponent(target), encoding: .utf8),
          !Self.anchors(body).contains(anchor)
        {
          broken.append("\(path): (\(link)): no heading #\(anchor) in \(target)")
        }
      }
    }
    #expect(broken.isEmpty, "broken links: \(broken)")
  }

  /// GitHub's anchors of a Markdown file's headings: lowercased, punctuation dropped, spaces as `-`.
  static func anchors(_ text: String) -> Set<String> {
    Set(text.split(separator: "\n").compactMap { line -> String? in
      guard let heading = line.firstMatch(of: /^#+ (.+)$/) else { return nil }
      let kept = heading.1.lowercased().unicodeScalars.filter {
        CharacterSet.alphanumerics.contains($0) || $0 == " " || $0 == "-" || $0 == "_"
      }
      return String(String.UnicodeScalarView(kept)).replacingOccurrences(of: " ", with: "-")
    })
  }

  @Test func anchorsAreGitHubs() {
    #expect(
      Self.anchors("## Start order\n### What callers see\n# Scale-out and high availability, 2×")
        == ["start-order", "what-callers-see", "scale-out-and-high-availability-2"])
  }
}
