import Foundation
import Testing

@testable import BinduDataPath
@testable import BinduMesh
@testable import BinduMeshConfig

@Suite struct TLSConfigTests {
  @Test func listenerAndClientTLSAreRead() throws {
    let yaml = """
      registry:
        tls: {cert: s.pem, key: s-key.pem, client_ca: ca.pem, allowed_identities: ["spiffe://x/y"]}
      core:
        tls: {ca: ca.pem, cert: c.pem, key: c-key.pem, server_name: core.example}
      callbacks:
        tls: {cert: s.pem, key: s-key.pem, client_ca: ca.pem, client_auth: optional}
        upstream_tls: {ca: ca.pem}
      pools:
        - agent: a
          listener_tls: {cert: /abs/s.pem, key: /abs/k.pem}
      """
    let config = try MeshConfig(yaml: yaml, source: "t.yaml", baseDirectory: "/etc/mesh")
    let registry = try #require(config.registry.tls)
    #expect(registry.certificate == "/etc/mesh/s.pem")
    #expect(registry.clientAuth == .required, "client_ca alone means required")
    #expect(registry.allowedIdentities == ["spiffe://x/y"])
    #expect(config.core.tls?.serverName == "core.example")
    #expect(config.callbacks.tls?.clientAuth == .optional)
    #expect(config.callbacks.upstreamTLS?.certificate == nil)
    #expect(config.pools[0].listenerTLS?.certificate == "/abs/s.pem")
    #expect(config.pools[0].listenerTLS?.clientAuth == MeshConfig.ListenerTLS.ClientAuth.none)
  }

  @Test(arguments: [
    ("registry:\n  tls: {cert: a.pem}\n", "registry.tls: a listener's TLS needs both \"cert\" and \"key\""),
    ("registry:\n  tls: {cert: a, key: b, client_auth: required}\n", "client_auth required needs client_ca"),
    ("registry:\n  tls: {cert: a, key: b, client_auth: maybe}\n", "registry.tls.client_auth: expected one of required, optional, none"),
    ("core:\n  tls: {cert: a.pem}\n", "core.tls: a client certificate needs both"),
    ("callbacks:\n  tls: {cert: a, key: b, allowed_identities: [x]}\n", "allowed_identities needs client certificates"),
  ])
  func badTLSConfigIsNamed(yaml: String, expected: String) {
    #expect {
      try MeshConfig(yaml: yaml, source: "t.yaml")
    } throws: { "\($0)".contains(expected) }
  }

  @Test func devCertificatesCarryTheIdentitiesAskedFor() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bm-certs-\(UUID())").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var options = DevCertificates.Options(directory: directory)
    options.hosts = ["mesh.example", "10.1.2.3"]
    options.clientIdentities = ["spiffe://cluster/mesh-b", "mesh-b.example"]
    let files = try DevCertificates.make(options)
    #expect(files.count == 6)
    let client = try PeerIdentity(derEncoded: try der(directory + "/client.pem"))
    #expect(client.uris == ["spiffe://cluster/mesh-b"] && client.dnsNames == ["mesh-b.example"])
    #expect(client.isAllowed(by: ["spiffe://cluster/mesh-b"]))
    #expect(!client.isAllowed(by: ["spiffe://cluster/other"]))
    #expect(client.isAllowed(by: []))
    let server = try PeerIdentity(derEncoded: try der(directory + "/server.pem"))
    #expect(server.dnsNames == ["mesh.example"])
    // A second run keeps the CA.
    let caBefore = try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8)
    #expect(try DevCertificates.make(options).count == 4)
    #expect(try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8) == caBefore)
  }

  private func der(_ path: String) throws -> [UInt8] {
    let pem = try String(contentsOfFile: path, encoding: .utf8)
    let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
    return Array(try #require(Data(base64Encoded: body)))
  }
}
