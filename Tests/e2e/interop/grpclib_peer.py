"""The interop replica and caller on grpclib (a pure-Python HTTP/2 stack on asyncio); stacks.py
gives the protocol. `python grpclib_peer.py --stubs DIR replica --name NAME` or
`call --target HOST:PORT`, with DIR from `stacks.grpclib_stubs`."""
import asyncio
import json
import sys
import time


def load(stubs: str):
    sys.path.insert(0, stubs)
    import agent_handler_grpc
    import agent_handler_pb2
    return agent_handler_pb2, agent_handler_grpc


async def replica(name: str, pb, services):
    from grpclib.const import Status
    from grpclib.server import Server

    async def begin(stream, method):
        print(f"call {method}", flush=True)
        headers = {"x-interop-replica": name}
        headers.update({key: stream.metadata[key] for key in ("x-interop-echo", "x-interop-echo-bin")
                        if key in stream.metadata})
        await stream.send_initial_metadata(metadata=headers)

    class Handler(services.AgentHandlerBase):
        async def HandleMessages(self, stream):
            request = await stream.recv_message()
            text = request.messages[-1].content if request.messages else ""
            if text.startswith("error:"):
                _, code, message = text.split(":", 2)
                print("call HandleMessages", flush=True)
                await stream.send_trailing_metadata(status=Status(int(code)), status_message=message,
                                                    metadata={"x-interop-trailer": name})
                return
            await begin(stream, "HandleMessages")
            if text.startswith("sleep:"):
                await asyncio.sleep(int(text[len("sleep:"):]) / 1000)
            await stream.send_message(pb.HandleResponse(content=text))
            await stream.send_trailing_metadata(metadata={"x-interop-trailer": name})

        async def HandleMessagesStream(self, stream):
            request = await stream.recv_message()
            await begin(stream, "HandleMessagesStream")
            count = int(request.messages[-1].content[len("stream:"):])
            for i in range(count):
                await stream.send_message(pb.HandleResponse(content=f"chunk-{i}", is_final=i == count - 1))
            await stream.send_trailing_metadata(metadata={"x-interop-trailer": name})

        async def GetCapabilities(self, stream):
            await stream.recv_message()
            await stream.send_message(pb.GetCapabilitiesResponse(name=name, description="interop replica"))

        async def HealthCheck(self, stream):
            await stream.recv_message()
            await stream.send_message(pb.HealthCheckResponse(healthy=True, message="ok"))

    server = Server([Handler()])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_closed()


async def call(target: str, pb, services) -> dict:
    import stacks
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError

    def ask(text):
        return pb.HandleRequest(messages=[pb.ChatMessage(role="user", content=text)])

    def failure(error):
        # grpclib raises asyncio.TimeoutError when its own deadline passes: DEADLINE_EXCEEDED.
        if isinstance(error, asyncio.TimeoutError):
            return {"status": 4, "message": "timeout"}
        return {"status": error.status.value, "message": error.message}

    host, port = target.rsplit(":", 1)
    channel = Channel(host, int(port))
    stub = services.AgentHandlerStub(channel)
    report = {"unary": []}
    for size in stacks.SIZES:
        try:
            content = (await stub.HandleMessages(ask(stacks.payload(size)), timeout=30)).content
            report["unary"].append({"size": size, "status": 0, "length": len(content), "sha256": stacks.sha256(content)})
        except (GRPCError, asyncio.TimeoutError) as error:
            report["unary"].append({"size": size, **failure(error)})
    try:
        await stub.HandleMessages(ask(f"error:9:{stacks.ERROR_MESSAGE}"), timeout=10)
        report["error"] = {"status": 0}
    except (GRPCError, asyncio.TimeoutError) as error:
        report["error"] = failure(error)
    try:
        async with stub.HandleMessages.open(timeout=10, metadata={
                "x-interop-echo": "hello from grpclib", "x-interop-echo-bin": stacks.ECHO_BIN}) as stream:
            await stream.send_message(ask("metadata"), end=True)
            await stream.recv_message()
            await stream.recv_trailing_metadata()
            headers, trailers = stream.initial_metadata, stream.trailing_metadata
        report["metadata"] = {"status": 0, "sent": "hello from grpclib", "sent_bin": stacks.ECHO_BIN.hex(),
                              "header": headers.get("x-interop-echo"),
                              "header_bin": headers.get("x-interop-echo-bin", b"").hex() or None,
                              "replica": headers.get("x-interop-replica"), "trailer": trailers.get("x-interop-trailer")}
    except (GRPCError, asyncio.TimeoutError) as error:
        report["metadata"] = failure(error)
    started = time.monotonic()
    try:
        await stub.HandleMessages(ask("sleep:1000"), timeout=0.2)
        report["deadline"] = {"status": 0}
    except (GRPCError, asyncio.TimeoutError) as error:
        report["deadline"] = failure(error)
    report["deadline"]["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    texts = [f"call-{i}-{stacks.payload(1000)}" for i in range(stacks.CONCURRENT_CALLS)]
    answers = await asyncio.gather(*(stub.HandleMessages(ask(text), timeout=30) for text in texts),
                                   return_exceptions=True)
    intact = sum(1 for text, answer in zip(texts, answers) if not isinstance(answer, BaseException)
                 and answer.content == text)
    report["concurrent"] = {"calls": len(texts), "intact": intact}
    chunks = []
    try:
        async with stub.HandleMessagesStream.open(timeout=10) as stream:
            await stream.send_message(ask(f"stream:{stacks.STREAM_CHUNKS}"), end=True)
            async for answer in stream:
                chunks.append(answer.content)
        report["stream"] = {"status": 0, "chunks": chunks}
    except (GRPCError, asyncio.TimeoutError) as error:
        report["stream"] = {**failure(error), "chunks": chunks}
    channel.close()
    return report


if __name__ == "__main__":
    import stacks
    args = stacks.arguments(__doc__, "grpclib", "--stubs")
    messages, stubs = load(args.stubs)
    if args.mode == "replica":
        asyncio.run(replica(args.name, messages, stubs))
    else:
        print(json.dumps(asyncio.run(call(args.target, messages, stubs))), flush=True)
