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

A replica on Bindu's own gRPC stubs, and one call from a host (`call_in`), are the scripts of
bindu_stubs.py.
"""
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

from harness import Process, http_get, stop_all, wait_until

STUBS = Path(__file__).with_name("bindu_stubs.py")
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
        stop_all(self.processes)
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


def call_in(host, *args) -> object:
    """`bindu_stubs.py call ARGS` in `host`: its JSON answer."""
    result = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, str(STUBS), "call", *map(str, args)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"call in host {host.name} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)

