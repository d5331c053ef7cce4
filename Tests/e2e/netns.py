"""Several hosts on one machine, for end-to-end tests across a real network.

Each host is a network namespace with a loopback of its own and one interface, `eth0`, with an
address of its own on a private /24; the hosts are joined by a bridge in the root namespace
(one veth pair per host, the outer end on the bridge), so the root namespace itself has no
address there. `Host.link_down()` takes a host's outer end down: a partition, with no packet
lost or refused, as a cable pulled out.

Processes run in a host with `ip netns exec` (`Host.spawn`); Python code of the test runs in a
host by `Host.run`, in a thread that enters the namespace (a socket belongs to the namespace of
the thread that makes it, and threads started from that thread stay in it). `network` is the
pytest fixture: it tears everything down, the processes in each namespace included, whatever
the test did.

Run as a script, the module is a replica on Bindu's own gRPC stubs
(`bindu.grpc.generated`, shipped in the `bindu` package): `python netns.py replica --help`; or
one call from a host (`call_in`): `python netns.py call --help`.
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import Process, http_get, wait_until

_serial = iter(range(1, 1000))


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_namespace(name: str):
    """Kills every process in namespace `name`, then deletes it."""
    for _ in range(20):
        pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    _ip("netns", "del", name, check=False)


def remove_stale():
    """Namespaces and bridges left by a test run that was killed (its process is gone)."""
    names = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    links = [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link", check=False).stdout.splitlines()]
    folders = [p.name for p in Path("/etc/netns").glob("bm*")]
    for name in names + links + folders:
        owner = name[2:].split("-")[0] if name.startswith("bm") and "-" in name else ""
        if owner.isdigit() and int(owner) != os.getpid() and not _pid_alive(int(owner)):
            if name in names:
                _remove_namespace(name)
            if name in links:
                _ip("link", "del", name, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


class Host:
    """One namespace on the network: `name` (a letter), `ns`, `address`."""

    def __init__(self, network, name: str, address: str):
        self.network = network
        self.name = name
        self.ns = f"{network.prefix}{name}"
        self.address = address
        self.outer = f"{self.ns}o"
        self.processes: list[Process] = []

    def spawn(self, args, cwd, env=None, name=None) -> Process:
        """A process in this host; stopped with the network."""
        process = Process(["ip", "netns", "exec", self.ns, *map(str, args)], cwd=cwd, env=env,
                          name=name or f"{self.name}:{Path(str(args[0])).name}")
        self.processes.append(process)
        return process

    def run(self, function, *args, **kwargs):
        """`function(*args, **kwargs)` in a thread inside this host's namespace; its result."""
        outcome = {}

        def body():
            fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
            try:
                os.setns(fd, os.CLONE_NEWNET)
            finally:
                os.close(fd)
            try:
                outcome["value"] = function(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - raised again in the caller
                outcome["error"] = error

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def wait_port(self, port: int, host="127.0.0.1", timeout=60.0, proc=None):
        """Until `host:port` accepts a connection from inside this host."""
        import socket

        def probe():
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} opened")
                return False
        self.run(wait_until, probe, timeout, f"{host}:{port} open in host {self.name}")

    def get_json(self, url):
        """GET `url` from inside this host, as JSON."""
        status, body = self.run(http_get, url)
        assert status == 200, f"GET {url} answered {status}: {body}"
        return json.loads(body)

    def link_down(self):
        """The link between this host and the others goes down (no packet passes either way)."""
        _ip("link", "set", self.outer, "down")

    def link_up(self):
        _ip("link", "set", self.outer, "up")

    def stop(self):
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception:  # noqa: BLE001 - best effort in teardown
                pass
        _remove_namespace(self.ns)


class Network:
    """Hosts joined by a bridge on 10.231.N.0/24 (N picked free); `host("a")` adds one."""

    def __init__(self):
        self.prefix = f"bm{os.getpid()}-{next(_serial)}"
        self.bridge = f"{self.prefix}br"
        self.hosts: dict[str, Host] = {}
        used = _ip("-4", "-o", "addr", check=False).stdout
        candidates = (f"10.231.{(os.getpid() + n) % 250 + 1}" for n in range(250))
        self.subnet = next(subnet for subnet in candidates if f" {subnet}." not in used)
        atexit.register(self.teardown)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")

    def host(self, name: str) -> Host:
        """Host `name`, known to every host's resolver as `host-NAME.internal`."""
        host = Host(self, name, f"{self.subnet}.{11 + len(self.hosts)}")
        self.hosts[name] = host
        self._write_hosts_files()
        inner = f"{host.ns}i"
        _ip("netns", "add", host.ns)
        _ip("link", "add", host.outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", host.ns)
        _ip("link", "set", host.outer, "master", self.bridge)
        _ip("link", "set", host.outer, "up")
        for command in (["link", "set", "lo", "up"], ["link", "set", inner, "name", "eth0"],
                        ["addr", "add", f"{host.address}/24", "dev", "eth0"], ["link", "set", "eth0", "up"]):
            _ip("-n", host.ns, *command)
        return host

    def _write_hosts_files(self):
        """/etc/netns/NS/hosts, which `ip netns exec` mounts on /etc/hosts (rewritten in place,
        so that processes already running see later hosts too)."""
        text = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{host.address} host-{host.name}.internal\n" for host in self.hosts.values())
        for host in self.hosts.values():
            folder = Path("/etc/netns") / host.ns
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "hosts", "w") as file:
                file.write(text)

    def teardown(self):
        for host in list(self.hosts.values()):
            host.stop()
            _ip("link", "del", host.outer, check=False)
            shutil.rmtree(Path("/etc/netns") / host.ns, ignore_errors=True)
        self.hosts.clear()
        _ip("link", "del", self.bridge, check=False)


def namespaces_or_skip():
    """Skips the test where namespaces cannot be made (not root, no `ip netns`); fails in CI."""
    import pytest
    reason = None
    if os.geteuid() != 0:
        reason = "network namespaces need root (CI runs the tests as root)"
    else:
        probe = f"bm{os.getpid()}-probe"
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            reason = f"cannot make a network namespace: ip netns add: {made.stderr.strip()}"
        _ip("netns", "del", probe, check=False)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _fixture():
    import pytest

    @pytest.fixture
    def network():
        """A `Network` to add hosts to; torn down after the test, whatever happened."""
        namespaces_or_skip()
        remove_stale()
        made = Network()
        try:
            yield made
        finally:
            made.teardown()
    return network


if "pytest" in sys.modules:
    network = _fixture()


# A replica on Bindu's own stubs, as an SDK process runs one.

def _replica(argv):
    import concurrent.futures

    import grpc
    from bindu.grpc.generated import agent_handler_pb2 as pb
    from bindu.grpc.generated import agent_handler_pb2_grpc as services

    parser = argparse.ArgumentParser(prog="netns.py replica", description=(
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

    parser = argparse.ArgumentParser(prog="netns.py call", description=(
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


def call_in(host, *args) -> object:
    """`netns.py call ARGS` in `host`: its JSON answer."""
    result = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, __file__, "call", *map(str, args)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"call in host {host.name} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


if __name__ == "__main__" and sys.argv[1:2] == ["replica"]:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    _replica(sys.argv[2:])
elif __name__ == "__main__" and sys.argv[1:2] == ["call"]:
    _call(sys.argv[2:])
