"""Interop through the mesh with three independent gRPC stacks: grpcio (gRPC's C-core), grpclib (a
pure-Python HTTP/2 stack) and grpc-java over Netty (the Kotlin SDK's transport). Each stack runs a
replica behind a declared pool and a caller in front of every pool, over real sockets: unary calls of
10 B, 100 KB and 3.9 MB with the bytes back intact, a replica's status and message unchanged, metadata
(text and binary) both ways, a 200 ms deadline on a 1 s handler, 50 concurrent calls and a server
stream in order. The peers and their protocol are in interop/stacks.py.

A Netty replica that announces a small SETTINGS_MAX_HEADER_LIST_SIZE gets no call over it: the mesh
answers RESOURCE_EXHAUSTED and keeps the replica's connection."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import Mesh, Process, free_port, require_tool, stop_all

sys.path.insert(0, str(Path(__file__).with_name("interop")))
import stacks  # noqa: E402

STACKS = ("grpcio", "grpclib", "java")
SMALL_HEADER_LIST = 2048


class Peers:
    """How to run each stack's replica and caller (classes and stubs built once per module)."""

    def __init__(self, folder: Path):
        self.classpath = f"{stacks.java_classes(folder / 'java')}:{stacks.java_classpath()}"
        self.grpclib = stacks.grpclib_stubs(folder / "grpclib")

    def command(self, stack: str, *args) -> list:
        if stack == "java":
            return ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", self.classpath, "Interop", *args]
        if stack == "grpclib":
            return [sys.executable, str(stacks.HERE / "grpclib_peer.py"), "--stubs", str(self.grpclib), *args]
        return [sys.executable, str(stacks.HERE / "grpcio_peer.py"), *args]

    def replica(self, stack: str, workdir: Path, name: str, *args) -> tuple:
        process = Process(self.command(stack, "replica", "--name", name, *args), cwd=workdir, name=name)
        port = int(process.wait_line(lambda l: l.startswith("listening on"), timeout=60).rsplit(":", 1)[1])
        return process, port

    def call(self, stack: str, port: int) -> dict:
        done = subprocess.run(self.command(stack, "call", "--target", f"127.0.0.1:{port}"), capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, f"the {stack} caller failed:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def interop(tmp_path_factory):
    """A replica of each stack behind its own declared pool of one mesh, and a Netty replica that
    announces SETTINGS_MAX_HEADER_LIST_SIZE 2048 behind a fourth."""
    for tool in ("java", "javac", "protoc", "grpc_java_plugin"):
        require_tool(tool)
    folder = tmp_path_factory.mktemp("interop")
    peers = Peers(folder)
    running, replicas = [], {}
    try:
        for stack in STACKS:
            process, port = peers.replica(stack, folder, stack)
            running.append(process)
            replicas[stack] = (process, port)
        process, port = peers.replica("java", folder, "java-small", "--max-header-list-size", str(SMALL_HEADER_LIST))
        running.append(process)
        replicas["java-small"] = (process, port)
        pools = "".join(f"  - agent: interop-{name}\n    replicas:\n      - 127.0.0.1:{port}\n"
                        for name, (_, port) in replicas.items())
        mesh = Mesh(folder, core_port=free_port(), extra_yaml="health:\n  interval: 2s\n  timeout: 2s\npools:\n" + pools)
        running.append(mesh)
        mesh.start()
        mesh.wait_in_rotation(len(replicas), timeout=60)
        yield peers, mesh, replicas
    finally:
        stop_all(running)


@pytest.mark.parametrize("replica", STACKS)
@pytest.mark.parametrize("caller", STACKS)
def test_a_caller_and_a_replica_of_each_stack_work_through_the_mesh(interop, caller, replica):
    peers, mesh, replicas = interop
    report = peers.call(caller, mesh.pool_port(f"interop-{replica}"))
    for answer, size in zip(report["unary"], stacks.SIZES, strict=True):
        assert answer == {"size": size, "status": 0, "length": size, "sha256": stacks.sha256(stacks.payload(size))}, answer
    assert report["error"] == {"status": 9, "message": stacks.ERROR_MESSAGE}, report["error"]
    metadata = report["metadata"]
    assert metadata["status"] == 0, metadata
    assert metadata["header"] == metadata["sent"] and metadata["header_bin"] == metadata["sent_bin"], metadata
    assert metadata["replica"] == replica and metadata["trailer"] == replica, metadata
    deadline = report["deadline"]
    assert deadline["status"] == 4 and deadline["elapsed_ms"] < 500, deadline
    assert report["concurrent"] == {"calls": stacks.CONCURRENT_CALLS, "intact": stacks.CONCURRENT_CALLS}
    assert report["stream"] == {"status": 0, "chunks": [f"chunk-{i}" for i in range(stacks.STREAM_CHUNKS)]}, \
        report["stream"]


def test_a_netty_replica_announcing_a_small_header_list_gets_no_call_over_it(interop, pb):
    """Netty announces maxInboundMetadataSize as SETTINGS_MAX_HEADER_LIST_SIZE: a call over it is
    answered RESOURCE_EXHAUSTED by the mesh, naming the replica's setting, and never sent; the
    connection stays, and calls within the limit go on."""
    import grpc
    messages, services = pb
    peers, mesh, replicas = interop
    process, port = replicas["java-small"]
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.pool_port('interop-java-small')}")
    stub = services.AgentHandlerStub(channel)
    request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content="hi")])
    assert stub.HandleMessages(request, timeout=10, metadata=[("x-within", "a" * 1000)]).content == "hi"
    calls = process.output().count("call HandleMessages")
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as error:
            stub.HandleMessages(request, timeout=10, metadata=[("x-big", "b" * 3000)])
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value
        assert f"over the {SMALL_HEADER_LIST} bytes replica 127.0.0.1:{port} takes (its SETTINGS_MAX_HEADER_LIST_SIZE)" \
            in error.value.details(), error.value.details()
    assert process.output().count("call HandleMessages") == calls, "a call over the limit reached the replica"
    for _ in range(5):
        assert stub.HandleMessages(request, timeout=10).content == "hi"
    assert process.output().count("call HandleMessages") == calls + 5
    output = mesh.process.output()
    assert "replica ended the call" not in output and "connection to the replica closed" not in output
    channel.close()
