import ArgumentParser
import BinduContract
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import SwiftProtobuf

/// A fast `AgentHandler` replica for benchmarks, on swift-nio-http2 directly: `HandleMessages`
/// answers `[<name>] <last message>`, `HealthCheck` answers healthy. It keeps the replicas from
/// being what a benchmark of proxies measures.
@main
struct BenchReplica: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bindu-bench-replica", abstract: "A fast echo AgentHandler for benchmarks.")

  @Option(help: "Replica name, put in every answer.") var name = "replica"
  @Option(help: "Listen address, host:port (port 0: any).") var listen = "127.0.0.1:0"
  @Option(help: "Event loop threads.") var threads = 1
  @Option(help: "Send GOAWAY on a connection after this many streams, leaving later ones unanswered (for tests).")
  var goawayAfter: Int?
  @Option(help: "Most streams open at once on a connection (SETTINGS_MAX_CONCURRENT_STREAMS).")
  var maxConcurrentStreams = 1000

  func run() throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    let name = self.name
    let goawayAfter = self.goawayAfter
    let maxConcurrentStreams = self.maxConcurrentStreams
    let parts = listen.split(separator: ":")
    let channel = try ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 256)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          var settings = NIOHTTP2Handler.ConnectionConfiguration()
          settings.initialSettings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams)]
          let streams = NIOLoopBound(StreamCounter(), eventLoop: channel.eventLoop)
          _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: settings, streamConfiguration: .init()
          ) { stream in
            stream.eventLoop.makeCompletedFuture {
              streams.value.count += 1
              if let goawayAfter {
                // Streams after the GOAWAY's last one are never answered, as the GOAWAY says.
                if streams.value.count > goawayAfter { return }
                if streams.value.count == goawayAfter,
                  let id = try? stream.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID)
                {
                  let goAway = HTTP2Frame.FramePayload.goAway(lastStreamID: id, errorCode: .noError, opaqueData: nil)
                  let parent = NIOLoopBound(channel, eventLoop: channel.eventLoop)
                  channel.eventLoop.execute {
                    parent.value.writeAndFlush(HTTP2Frame(streamID: .rootStream, payload: goAway), promise: nil)
                  }
                }
              }
              try stream.pipeline.syncOperations.addHandler(EchoStream(name: name))
            }
          }
        }
      }
      .bind(host: String(parts[0]), port: Int(parts[1]) ?? 0).wait()
    FileHandle.standardOutput.write(Data("listening on \(parts[0]):\(channel.localAddress?.port ?? 0)\n".utf8))
    try channel.closeFuture.wait()
  }
}

/// The streams a connection has opened.
final class StreamCounter {
  var count = 0
}

/// One call: collects the request, answers when it ends.
final class EchoStream: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  private let name: String
  private var path = ""
  private var body = ByteBuffer()

  init(name: String) { self.name = name }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .headers(let headers):
      path = headers.headers.first(name: ":path") ?? ""
      if headers.endStream { respond(context) }
    case .data(let data):
      if case .byteBuffer(var buffer) = data.data { body.writeBuffer(&buffer) }
      if data.endStream { respond(context) }
    default:
      break
    }
  }

  private func respond(_ context: ChannelHandlerContext) {
    var message = body
    let bytes = message.readableBytes >= 5 ? message.getBytes(at: message.readerIndex + 5, length: message.readableBytes - 5) ?? [] : []
    let reply: [UInt8]
    if path.hasSuffix("/HealthCheck") {
      reply = (try? Bindu_Grpc_HealthCheckResponse.with { $0.healthy = true }.serializedBytes()) ?? []
    } else {
      let request = (try? Bindu_Grpc_HandleRequest(serializedBytes: bytes)) ?? .init()
      let text = request.messages.last?.content ?? ""
      reply = (try? Bindu_Grpc_HandleResponse.with { $0.content = "[\(name)] \(text)" }.serializedBytes()) ?? []
    }
    message = context.channel.allocator.buffer(capacity: reply.count + 5)
    message.writeInteger(UInt8(0))
    message.writeInteger(UInt32(reply.count))
    message.writeBytes(reply)
    let headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
    context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
    context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(message)))), promise: nil)
    context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: ["grpc-status": "0"], endStream: true))), promise: nil)
  }
}
