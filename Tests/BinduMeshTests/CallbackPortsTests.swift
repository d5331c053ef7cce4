import Testing

@testable import BinduMesh

/// The ports pools made by registration take (`callbacks.first_port`), without sockets.
@Suite struct CallbackPortsTests {
  @Test func portsCountUpFromTheFirstSkippingThoseTaken() {
    var ports = CallbackListenerBinder.Ports(next: 3776)
    #expect(ports.take(skipping: []) == 3776)
    // A declared pool on 3777 and a restored one on 3779.
    #expect(ports.take(skipping: [3777, 3779]) == 3778)
    #expect(ports.take(skipping: [3777, 3779]) == 3780)
    // A port handed out once is not handed out again, even when nothing holds it any more.
    #expect(ports.take(skipping: []) == 3781)
  }

  @Test func aFirstPortOfZeroLetsTheSystemPickEveryTime() {
    var ports = CallbackListenerBinder.Ports(next: 0)
    #expect(ports.take(skipping: [0, 3776]) == 0)
    #expect(ports.take(skipping: []) == 0)
    #expect(ports.next == 0)
  }
}
