import GRPCNIOTransportCore

extension HostPort {
  /// The host and port of an IPv4 or IPv6 socket address (a listener's, as bound); `nil` for
  /// any other kind.
  package init?(_ address: GRPCNIOTransportCore.SocketAddress) {
    if let ipv4 = address.ipv4 {
      self.init(host: ipv4.host, port: ipv4.port)
    } else if let ipv6 = address.ipv6 {
      self.init(host: ipv6.host, port: ipv6.port)
    } else {
      return nil
    }
  }
}

extension GRPCNIOTransportCore.SocketAddress {
  /// A socket address for a `HostPort` whose host is an IP literal (IPv6 when it has a colon).
  package static func ipv4orv6(_ address: HostPort) -> Self {
    address.host.contains(":") ? .ipv6(host: address.host, port: address.port) : .ipv4(host: address.host, port: address.port)
  }
}
