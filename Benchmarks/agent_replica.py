"""An agent-shaped AgentHandler replica for the agent-load benchmark (Benchmarks/agent_load.py).

grpcio (asyncio) server on 127.0.0.1 (a free port unless --port), printing `listening on
127.0.0.1:PORT` once it serves. HandleMessages runs at most --concurrency calls at once; more wait
inside the replica in arrival order (FIFO). A call's handler time is its base time times
--slowdown: the base time is the `work:<ms>` prefix of the first message's content when the
caller sends one (the benchmark does, so every configuration gets the same job sizes), otherwise
a draw from a lognormal distribution (median --median-ms, sigma --sigma) of this replica's own
seeded generator. HealthCheck answers healthy=true at once (never queued), with
`served=<calls completed> waited=<calls that waited for a slot>` as its message, which is how the
benchmark counts calls per replica and calls queued inside the replicas.
"""
import argparse
import asyncio
import collections
import random
import sys


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="replica")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--median-ms", type=float, default=100.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--slowdown", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stubs", required=True, help="directory of agent_handler_pb2*.py (generated)")
    return parser.parse_args()


class Slots:
    """At most `limit` holders; the others wait in arrival order."""

    def __init__(self, limit):
        self.free = limit
        self.waiting = collections.deque()
        self.waited = 0  # acquisitions that had to wait

    async def acquire(self):
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.waited += 1
        try:
            await future  # the releaser handed its slot over
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed over just as the caller went away
            else:
                self.waiting.remove(future)
            raise

    def release(self):
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


async def serve(args):
    sys.path.insert(0, args.stubs)
    import grpc
    import agent_handler_pb2 as messages
    import agent_handler_pb2_grpc as services

    rng = random.Random(f"{args.seed}:{args.name}")
    slots = Slots(args.concurrency)
    served = 0

    class Handler(services.AgentHandlerServicer):
        async def HandleMessages(self, request, context):
            nonlocal served
            content = request.messages[0].content if request.messages else ""
            if content.startswith("work:"):
                base_ms = float(content[5:].split(None, 1)[0])
            else:
                base_ms = rng.lognormvariate(0.0, args.sigma) * args.median_ms
            await slots.acquire()
            try:
                await asyncio.sleep(base_ms * args.slowdown / 1000.0)
            finally:
                slots.release()
            served += 1
            return messages.HandleResponse(content=f"[{args.name}] {content}", state="completed", is_final=True)

        async def HealthCheck(self, request, context):
            return messages.HealthCheckResponse(healthy=True, message=f"served={served} waited={slots.waited}")

        async def GetCapabilities(self, request, context):
            return messages.GetCapabilitiesResponse(name="bench-agent", description="agent-shaped load")

    server = grpc.aio.server()
    services.add_AgentHandlerServicer_to_server(Handler(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    try:
        asyncio.run(serve(parse_args()))
    except KeyboardInterrupt:
        pass
