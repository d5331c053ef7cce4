import Foundation
import Testing

@testable import BinduMesh
@testable import BinduMeshConfig

@Suite struct ListenerConflictTests {
  let table = """
      sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
       0: 0100007F:0EBF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0
       1: 0100007F:0EBF 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0
       2: 0100007F:0EC0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0
    """

  @Test func onlyListeningSocketsOnThePortAreFound() {
    #expect(PortHolder.listeningInodes(in: table, port: 3775) == ["4242"])
    #expect(PortHolder.listeningInodes(in: table, port: 3776) == ["4444"])
    #expect(PortHolder.listeningInodes(in: table, port: 3777).isEmpty)
  }

  @Test func descriptorLinksAndCommandLinesAreRead() {
    #expect(PortHolder.socketInode("socket:[4242]") == "4242")
    #expect(PortHolder.socketInode("/dev/null") == nil)
    #expect(PortHolder.commandLine(Data("node\0dist/index.js\0".utf8)) == "node dist/index.js")
    #expect(PortHolder.commandLine(Data()) == "no command line")
    #expect(PortHolder.commandLine(Data(String(repeating: "x", count: 200).utf8)).count == 120)
    #expect(PortHolder(pid: 1, command: "/usr/bin/bindu-mesh --config m.yaml").isMesh)
    #expect(!PortHolder(pid: 1, command: "python bindu-mesh.py").isMesh)
  }

  @Test func aBinduCoreOnTheRegistryPortGetsTheStartOrder() {
    let conflict = ListenerConflict(
      key: "registry.listen", address: HostPort(host: "127.0.0.1", port: 3775),
      holder: PortHolder(pid: 7, command: "python bindu serve"), speaker: .binduService)
    let text = conflict.description
    #expect(text.hasPrefix("registry.listen 127.0.0.1:3775 is taken by process 7 (python bindu serve), which answers BinduService: a Bindu core"))
    #expect(text.contains("start bindu-mesh before the SDKs"))
  }

  @Test func anotherMeshOrAnUnseenProcessIsSaidSo() {
    let address = HostPort(host: "127.0.0.1", port: 9775)
    let mesh = ListenerConflict(
      key: "admin.listen", address: address, holder: PortHolder(pid: 9, command: "/opt/bindu-mesh"), speaker: .notGRPC("x"))
    #expect(mesh.description.contains("another bindu-mesh listens there"))
    let unseen = ListenerConflict(key: "admin.listen", address: address, holder: nil, speaker: .otherGRPC)
    #expect(unseen.description.contains("a process this user cannot see"))
    #expect(unseen.description.contains("which answers gRPC but not BinduService: stop that process, or set admin.listen to a free port"))
  }
}
