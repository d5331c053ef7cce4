"""The interop replica and caller on grpcio (gRPC's C-core), on Bindu's generated stubs; stacks.py
gives the protocol. `python grpcio_peer.py replica --name NAME` or `call --target HOST:PORT`."""
import concurrent.futures
import json
import sys
import time

import grpc
from bindu.grpc.generated import agent_handler_pb2 as pb
from bindu.grpc.generated import agent_handler_pb2_grpc as services

import stacks

OPTIONS = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]


def status_code(value: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == value)


def replica(name: str):
    class Handler(services.AgentHandlerServicer):
        def begin(self, context, method):
            print(f"call {method}", flush=True)
            received = dict(context.invocation_metadata())
            headers = [("x-interop-replica", name)]
            headers += [(key, received[key]) for key in ("x-interop-echo", "x-interop-echo-bin") if key in received]
            context.send_initial_metadata(headers)
            context.set_trailing_metadata([("x-interop-trailer", name)])

        def HandleMessages(self, request, context):
            text = request.messages[-1].content if request.messages else ""
            if text.startswith("error:"):
                _, code, message = text.split(":", 2)
                print("call HandleMessages", flush=True)
                context.set_trailing_metadata([("x-interop-trailer", name)])
                context.abort(status_code(int(code)), message)
            self.begin(context, "HandleMessages")
            if text.startswith("sleep:"):
                time.sleep(int(text[len("sleep:"):]) / 1000)
            return pb.HandleResponse(content=text)

        def HandleMessagesStream(self, request, context):
            self.begin(context, "HandleMessagesStream")
            count = int(request.messages[-1].content[len("stream:"):])
            for i in range(count):
                yield pb.HandleResponse(content=f"chunk-{i}", is_final=i == count - 1)

        def GetCapabilities(self, request, context):
            return pb.GetCapabilitiesResponse(name=name, description="interop replica")

        def HealthCheck(self, request, context):
            return pb.HealthCheckResponse(healthy=True, message="ok")

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=64), options=OPTIONS)
    services.add_AgentHandlerServicer_to_server(Handler(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def ask(text):
    return pb.HandleRequest(messages=[pb.ChatMessage(role="user", content=text)])


def failure(error: grpc.RpcError) -> dict:
    return {"status": error.code().value[0], "message": error.details()}


def call(target: str) -> dict:
    channel = grpc.insecure_channel(target, options=OPTIONS)
    stub = services.AgentHandlerStub(channel)
    report = {"unary": []}
    for size in stacks.SIZES:
        try:
            content = stub.HandleMessages(ask(stacks.payload(size)), timeout=30).content
            report["unary"].append({"size": size, "status": 0, "length": len(content), "sha256": stacks.sha256(content)})
        except grpc.RpcError as error:
            report["unary"].append({"size": size, **failure(error)})
    try:
        stub.HandleMessages(ask(f"error:9:{stacks.ERROR_MESSAGE}"), timeout=10)
        report["error"] = {"status": 0}
    except grpc.RpcError as error:
        report["error"] = failure(error)
    try:
        _, call = stub.HandleMessages.with_call(ask("metadata"), timeout=10, metadata=[
            ("x-interop-echo", "hello from grpcio"), ("x-interop-echo-bin", stacks.ECHO_BIN)])
        headers, trailers = dict(call.initial_metadata()), dict(call.trailing_metadata())
        report["metadata"] = {"status": 0, "sent": "hello from grpcio", "sent_bin": stacks.ECHO_BIN.hex(),
                              "header": headers.get("x-interop-echo"),
                              "header_bin": headers.get("x-interop-echo-bin", b"").hex() or None,
                              "replica": headers.get("x-interop-replica"), "trailer": trailers.get("x-interop-trailer")}
    except grpc.RpcError as error:
        report["metadata"] = failure(error)
    started = time.monotonic()
    try:
        stub.HandleMessages(ask("sleep:1000"), timeout=0.2)
        report["deadline"] = {"status": 0}
    except grpc.RpcError as error:
        report["deadline"] = failure(error)
    report["deadline"]["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    texts = [f"call-{i}-{stacks.payload(1000)}" for i in range(stacks.CONCURRENT_CALLS)]
    futures = [stub.HandleMessages.future(ask(text), timeout=30) for text in texts]
    intact = 0
    for text, future in zip(texts, futures):
        try:
            intact += future.result().content == text
        except grpc.RpcError:
            pass
    report["concurrent"] = {"calls": len(texts), "intact": intact}
    chunks = []
    try:
        for answer in stub.HandleMessagesStream(ask(f"stream:{stacks.STREAM_CHUNKS}"), timeout=10):
            chunks.append(answer.content)
        report["stream"] = {"status": 0, "chunks": chunks}
    except grpc.RpcError as error:
        report["stream"] = {**failure(error), "chunks": chunks}
    channel.close()
    return report


if __name__ == "__main__":
    args = stacks.arguments(__doc__, "grpcio")
    if args.mode == "replica":
        replica(args.name)
    else:
        print(json.dumps(call(args.target)), flush=True)
        sys.exit(0)
