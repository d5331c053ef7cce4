import BinduDataPath
import GRPCCore

/// Records the go-grpc-prometheus server metrics of every call a grpc-swift server (the
/// registry) serves: started, handled by code, messages each way, handling time.
struct ServerMetricsInterceptor: ServerInterceptor {
  let metrics: MeshMetrics

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let call = metrics.server(pool: "", path: "/" + context.descriptor.fullyQualifiedMethod)
    call.started.increment()
    let started = ContinuousClock.now
    let counted = StreamingServerRequest(
      metadata: request.metadata,
      messages: RPCAsyncSequence(wrapping: request.messages.map { message in
        call.messagesReceived.increment()
        return message
      }))
    let response: StreamingServerResponse<Output>
    do {
      response = try await next(counted, context)
    } catch {
      call.finished(code: Self.code(of: error), after: .now - started)
      throw error
    }
    switch response.accepted {
    case .failure(let error):
      call.finished(code: error.code.rawValue, after: .now - started)
      return response
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        do {
          let trailers = try await producer(RPCWriter(wrapping: CountingWriter(base: writer, counter: call)))
          call.finished(code: 0, after: .now - started)
          return trailers
        } catch {
          call.finished(code: Self.code(of: error), after: .now - started)
          throw error
        }
      }
      return StreamingServerResponse(accepted: .success(contents))
    }
  }

  static func code(of error: any Error) -> Int {
    if let error = error as? RPCError { return error.code.rawValue }
    if let error = error as? any RPCErrorConvertible { return error.rpcErrorCode.rawValue }
    return RPCError.Code.unknown.rawValue
  }
}

/// Counts the messages written to a response.
private struct CountingWriter<Element: Sendable>: RPCWriterProtocol {
  let base: RPCWriter<Element>
  let counter: GRPCCallMetrics

  func write(_ element: Element) async throws {
    try await base.write(element)
    counter.messagesSent.increment()
  }

  func write(contentsOf elements: some Sequence<Element>) async throws {
    for element in elements { try await write(element) }
  }
}
