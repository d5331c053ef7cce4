"""Scripts on Bindu's own gRPC stubs (`bindu.grpc.generated`, shipped in the `bindu` package, on
grpcio), run as processes by the tests (in a host of netns.py, or here):

- `python bindu_stubs.py replica --help`: an echo replica that registers as the SDKs do;
- `python bindu_stubs.py call --help`: one call (HandleMessages, Heartbeat, UnregisterAgent),
  its answer printed as JSON.
"""
import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

def _replica(argv):
    import concurrent.futures

    import grpc
    from bindu.grpc.generated import agent_handler_pb2 as pb
    from bindu.grpc.generated import agent_handler_pb2_grpc as services

    parser = argparse.ArgumentParser(prog="bindu_stubs.py replica", description=(
        "An echo replica on bindu.grpc.generated: answers `[NAME] TEXT` (a `sleep:MS ` prefix is slept "
        "first), registers with --core sending the callback `localhost:PORT` as the SDKs do, heartbeats "
        "and ignores the answer, never registers again nor unregisters."))
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", default="0.0.0.0:0")
    parser.add_argument("--core", help="HOST:PORT of the core (or a mesh's registry) to register with")
    parser.add_argument("--core-tls", help="folder with ca.pem, client.pem, client-key.pem: register over mTLS")
    parser.add_argument("--callback-host", default="localhost")
    parser.add_argument("--agent-config", default="{}")
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    args = parser.parse_args(argv)

    class Handler(services.AgentHandlerServicer):
        def answer(self, request):
            text = request.messages[-1].content if request.messages else ""
            if text.startswith("sleep:"):
                delay, _, text = text[len("sleep:"):].partition(" ")
                time.sleep(int(delay) / 1000)
            return pb.HandleResponse(content=f"[{args.name}] {text}")

        def HandleMessages(self, request, context):
            return self.answer(request)

        def HandleMessagesStream(self, request, context):
            response = self.answer(request)
            response.is_final = True
            yield response

        def GetCapabilities(self, request, context):
            return pb.GetCapabilitiesResponse(name=args.name, description="echo replica")

        def HealthCheck(self, request, context):
            return pb.HealthCheckResponse(healthy=True, message="ok")

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=32))
    services.add_AgentHandlerServicer_to_server(Handler(), server)
    port = server.add_insecure_port(args.listen)
    server.start()
    print(f"listening on {args.listen.rsplit(':', 1)[0]}:{port}", flush=True)
    if not args.core:
        server.wait_for_termination()
        return
    if args.core_tls:
        folder = Path(args.core_tls)
        credentials = grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes(),
                                                   (folder / "client-key.pem").read_bytes(),
                                                   (folder / "client.pem").read_bytes())
        channel = grpc.secure_channel(args.core, credentials)
    else:
        channel = grpc.insecure_channel(args.core)
    stub = services.BinduServiceStub(channel)
    try:
        answer = stub.RegisterAgent(pb.RegisterAgentRequest(
            config_json=args.agent_config, grpc_callback_address=f"{args.callback_host}:{port}"), timeout=60)
        result = {"success": answer.success, "agent_id": answer.agent_id, "did": answer.did,
                  "agent_url": answer.agent_url, "error": answer.error}
    except grpc.RpcError as error:
        result = {"success": False, "error": f"{error.code().name}: {error.details()}"}
    print(("registered " if result["success"] else "registration failed ") + json.dumps(result), flush=True)
    while result["success"] and args.heartbeat_interval > 0:
        time.sleep(args.heartbeat_interval)
        try:
            stub.Heartbeat(pb.HeartbeatRequest(agent_id=result["agent_id"], timestamp=int(time.time() * 1000)),
                           timeout=5)
        except grpc.RpcError:
            pass
    server.wait_for_termination()


def _call(argv):
    """One gRPC call from this host, its answer printed as JSON (gRPC's own threads would not
    follow a namespace entered by a thread of the test, so calls run in a process of the host)."""
    import grpc
    from bindu.grpc.generated import agent_handler_pb2 as pb
    from bindu.grpc.generated import agent_handler_pb2_grpc as services

    parser = argparse.ArgumentParser(prog="bindu_stubs.py call", description=(
        "HandleMessages with --text, or Heartbeat or UnregisterAgent of an agent id, to --target; prints JSON."))
    parser.add_argument("--target", required=True)
    parser.add_argument("--text", action="append", default=[])
    parser.add_argument("--unregister")
    parser.add_argument("--heartbeat")
    args = parser.parse_args(argv)
    channel = grpc.insecure_channel(args.target)
    if args.heartbeat:
        answer = services.BinduServiceStub(channel).Heartbeat(
            pb.HeartbeatRequest(agent_id=args.heartbeat, timestamp=int(time.time() * 1000)), timeout=10)
        print(json.dumps({"acknowledged": answer.acknowledged}), flush=True)
        return
    if args.unregister:
        answer = services.BinduServiceStub(channel).UnregisterAgent(
            pb.UnregisterAgentRequest(agent_id=args.unregister), timeout=10)
        print(json.dumps({"success": answer.success, "error": answer.error}), flush=True)
        return
    stub = services.AgentHandlerStub(channel)
    answers = [stub.HandleMessages(pb.HandleRequest(messages=[pb.ChatMessage(content=text)]), timeout=10).content
               for text in args.text]
    print(json.dumps(answers), flush=True)



if __name__ == "__main__" and sys.argv[1:2] == ["replica"]:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    _replica(sys.argv[2:])
elif __name__ == "__main__" and sys.argv[1:2] == ["call"]:
    _call(sys.argv[2:])
