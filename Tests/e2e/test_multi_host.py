"""bindu-mesh between hosts: network namespaces, each with an address of its own (netns.py).

Host A runs the real Bindu core and mesh A; hosts B and C run mesh B, mesh C and replicas on
Bindu's own gRPC stubs (`bindu_stubs.py replica`). The meshes run the configs of
examples/multi-host/ as they are, with three substitutions: the example hosts' addresses
(10.0.0.1, .2, .3 for A, B, C) become the test hosts', the certificate folder
/etc/bindu-mesh/certs becomes the host's own folder of certificates, and `--state-dir` names a
folder of the test. The host names of the examples (`host-a.internal`, ...) resolve to the test
hosts in each namespace's /etc/hosts. Certificates are made as docs/deployment.md says, with
`bindu-mesh certs dev`. Two tests change one thing more, and say so: the rewrite turned off, and
mesh A named by its address instead of its name.

A2A clients run on host A (the core's A2A port, 3773, is on its loopback).
"""
import collections
import json
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

import certs
from harness import BIN_DIR, BINDU, ROOT, MessageFlow, a2a_ask, agent_config, wait_until
from netns import network  # noqa: F401 - the fixture

EXAMPLES = ROOT / "examples" / "multi-host"
EXAMPLE_ADDRESSES = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}
EXAMPLE_CERTS = "/etc/bindu-mesh/certs"
ADMIN = "http://127.0.0.1:9775"
REGISTRY, CALLBACK = 3775, 3776
URL = "http://localhost:3773/"
CONFIG = agent_config(a2a_port=3773)


def example(name: str, hosts: dict, cert_dir: Path) -> str:
    """An example config with the test hosts' addresses and `cert_dir` for the certificates."""
    text = (EXAMPLES / name).read_text()
    for letter, address in EXAMPLE_ADDRESSES.items():
        if letter in hosts:
            text = re.sub(rf"\b{re.escape(address)}\b", hosts[letter].address, text)
    text = text.replace(EXAMPLE_CERTS, str(cert_dir))
    assert "10.0.0." not in text, f"{name} names a host the test did not make"
    return text


def server_names(host) -> str:
    """What a host's server certificate names: its host name and its address."""
    return f"host-{host.name}.internal,{host.address}"


def host_certificates(folder: Path, ca: Path, names: str, identity: str) -> Path:
    """A host's certificates from the shared CA: a server certificate for `names`, a client
    certificate for `identity`; the CA's key is not left on the host."""
    folder.mkdir(parents=True)
    for name in ("ca.pem", "ca-key.pem"):
        shutil.copy(ca / name, folder / name)
    certs.dev(folder, "--hosts", names, "--client-identities", identity)
    (folder / "ca-key.pem").unlink()
    return folder


class HostMesh:
    """bindu-mesh on a host, from an example config."""

    def __init__(self, host, workdir: Path, config: str):
        self.host = host
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "bindu-mesh.yaml"
        self.config_path.write_text(config)
        self.process = None
        self.previous = []

    def start(self):
        if self.process is not None:
            self.previous.append(self.process)
        self.process = self.host.spawn(
            [BIN_DIR / "bindu-mesh", "--config", self.config_path, "--state-dir", self.workdir / "state",
             "--log-level", "debug"], cwd=self.workdir, name=f"mesh {self.host.name}")
        try:
            self.host.wait_port(9775, timeout=30, proc=self.process.proc)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}; mesh {self.host.name} said:\n{self.log()[-3000:]}") from None
        return self

    def kill(self):
        self.process.stop(signal.SIGKILL)

    def pools(self) -> list:
        return self.host.get_json(f"{ADMIN}/pools")

    def endpoints(self) -> list:
        return [e for pool in self.pools() for e in pool["endpoints"]]

    def log(self) -> str:
        return "\n".join(p.output() for p in [*self.previous, self.process])


class SdkReplica:
    """`bindu_stubs.py replica` on a host: registers with `core`, sending `localhost:PORT` (and the agent
    config `config`, by default `CONFIG`)."""

    def __init__(self, host, workdir: Path, name: str, core: str, tls: Path = None, config: dict = None):
        args = [sys.executable, Path(__file__).with_name("bindu_stubs.py"), "replica", "--name", name,
                "--core", core, "--agent-config", json.dumps(config or CONFIG), "--heartbeat-interval", "5"]
        if tls:
            args += ["--core-tls", tls]
        self.name = name
        self.process = host.spawn(args, cwd=workdir, name=name)
        self.port = int(self.process.wait_line(lambda l: l.startswith("listening on"), timeout=30).rsplit(":", 1)[1])

    def registration(self, timeout=60.0) -> dict:
        line = self.process.wait_line(lambda l: l.startswith(("registered ", "registration failed ")), timeout)
        return json.loads(line.split(" ", 2)[-1] if line.startswith("registration failed") else line.split(" ", 1)[1])


def start_core(host, workdir: Path, exist_ok=False):
    workdir.mkdir(exist_ok=exist_ok)
    process = host.spawn([BINDU, "serve", "--grpc", "--grpc-port", "3774"], cwd=workdir,
                         env={"GRPC__PORT": "3774", "GRPC__HOST": "127.0.0.1"}, name="core")
    host.wait_port(3774, timeout=90, proc=process.proc)
    return process


def ask(host, text):
    """One A2A message from `host` (host A): (state, text)."""
    return host.run(a2a_ask, URL, text)


def replica_of(text: str) -> str:
    return text.split("]")[0].lstrip("[")


Topology = collections.namedtuple("Topology", "hosts meshes replicas certs")


def three_hosts(network, tmp_path, replicas_per_host=2) -> Topology:  # noqa: F811 - network is the fixture
    """Core and mesh A on host A; mesh and replicas on B and C, registered with A over mTLS."""
    hosts = {name: network.host(name) for name in "abc"}
    ca = certs.dev(tmp_path / "ca")
    cert_dirs = {name: host_certificates(tmp_path / f"certs-{name}", ca, server_names(host),
                                         f"spiffe://bindu-mesh/mesh-{name}") for name, host in hosts.items()}
    start_core(hosts["a"], tmp_path / "core")
    meshes = {name: HostMesh(host, tmp_path / f"mesh-{name}", example(f"mesh-{name}.yaml", hosts, cert_dirs[name])).start()
              for name, host in hosts.items()}
    replicas = [SdkReplica(hosts[h], tmp_path, f"{h}{i}", f"127.0.0.1:{REGISTRY}")
                for h in "bc" for i in range(1, replicas_per_host + 1)]
    for replica in replicas:
        registration = replica.registration()
        assert registration["success"], (f"{replica.name}: {registration['error']}\nmesh {replica.name[0]}:\n"
                                         + meshes[replica.name[0]].log()[-4000:])
        assert registration["agent_url"] == URL.rstrip("/") and registration["did"].startswith("did:"), registration
    return Topology(hosts, meshes, replicas, cert_dirs)


def answers_from_every_replica(topology, label, most=24) -> collections.Counter:
    """A2A messages from host A until each replica has answered one (at most `most`)."""
    names = {r.name for r in topology.replicas}
    seen = collections.Counter()
    for i in range(most):
        state, text = ask(topology.hosts["a"], f"{label} {i}")
        assert state == "completed" and text.endswith(f" {label} {i}"), (state, text)
        seen[replica_of(text)] += 1
        if set(seen) == names:
            return seen
    raise AssertionError(f"not every replica answered within {most} messages: {dict(seen)}")


def endpoints_at(mesh, address) -> list:
    return [e for e in mesh.endpoints() if e["address"] == address]


def in_rotation(mesh, address) -> bool:
    found = endpoints_at(mesh, address)
    return bool(found) and all(e["state"] == "healthy" for e in found)


def one_endpoint(mesh, address, event):
    """Mesh A has one endpoint for a host's mesh after `event`."""
    registered = endpoints_at(mesh, address)
    print(f"mesh A's endpoints at {address} after {event}:", registered)
    assert len(registered) == 1, f"one endpoint for mesh C in mesh A: {registered}"


def test_replicas_on_two_hosts_answer_through_meshes_over_mtls(network, tmp_path):
    topology = three_hosts(network, tmp_path)
    hosts, meshes = topology.hosts, topology.meshes
    mesh_a_endpoints = {e["address"] for e in meshes["a"].endpoints()}
    assert mesh_a_endpoints == {f"{hosts[h].address}:{CALLBACK}" for h in "bc"}, meshes["a"].pools()
    for h in "bc":
        pool = meshes[h].pools()[0]
        assert pool["callback_address"] == f"{hosts[h].address}:{CALLBACK}", pool
        assert pool["registered_with_core"], pool
    seen = answers_from_every_replica(topology, "across hosts")
    print("answers:", dict(seen))


def test_partition_of_host_c_fails_only_its_calls_in_flight_and_c_comes_back(network, tmp_path):
    topology = three_hosts(network, tmp_path)
    hosts, mesh_a = topology.hosts, topology.meshes["a"]
    c_endpoint = f"{hosts['c'].address}:{CALLBACK}"
    answers_from_every_replica(topology, "warm-up")
    flow_timeout = 45.0  # the core's deadline (30 s) and one call queued behind a call that ran into it
    flow = hosts["a"].run(MessageFlow, URL, threads=2, sleep_ms=200, timeout=flow_timeout)
    try:
        flow.wait_completed(6)
        hosts["c"].link_down()
        down = time.monotonic()
        wait_until(lambda: not in_rotation(mesh_a, c_endpoint), 20, f"{c_endpoint} leaves rotation in mesh A")
        out = time.monotonic()
        during = flow.wait_completed(8, after=out + 1, timeout=60)
        # Until mesh C's heartbeat to mesh A (every 30 s) has failed: it then registers again.
        mesh_c = topology.meshes["c"]
        wait_until(lambda: mesh_c.process.count(lambda l: "the core is unreachable" in l), 50,
                   "mesh C finds mesh A unreachable")
        during = flow.completed(after=out + 1)
        hosts["c"].link_up()
        up = time.monotonic()
        wait_until(lambda: in_rotation(mesh_a, c_endpoint), 60, f"{c_endpoint} back in rotation in mesh A")
        back = time.monotonic()
        wait_until(lambda: any(replica_of(o.text).startswith("c") for o in flow.completed(after=back)), 60,
                   "a message answered on host C after the link came back")
    finally:
        flow.stop()
    outcomes = flow.outcomes
    completed = [o for o in outcomes if o.state == "completed"]
    lost = [o for o in outcomes if o.state == "error" and o.text.startswith("TimeoutError")]
    failed = [o for o in outcomes if o.state != "completed" and o not in lost]
    print(f"partition: sent {len(outcomes)} completed {len(completed)} failed {len(failed)} lost {len(lost)}; "
          f"C out of rotation {out - down:.1f}s after the link went down, link up again after {up - down:.1f}s, "
          f"C back in rotation {back - up:.1f}s later")
    print("failed (seconds from sending, seconds from the link going down, state, text):",
          [(round(o.done - o.sent, 1), round(o.done - down, 1), o.state, o.text[:120]) for o in failed])
    assert not lost, f"messages with no answer within {flow_timeout}s: {lost}"
    assert len(completed) + len(failed) == len(outcomes)
    sent_while_out = [o for o in during if o.sent > out + 1]
    assert sent_while_out and all(replica_of(o.text).startswith("b") for o in sent_while_out), during
    # Only messages that met host C's link going down may fail, each within the core's deadline.
    assert all(o.sent < out + 1 and o.done > down for o in failed), failed
    assert all(o.done - o.sent < flow_timeout for o in outcomes)
    assert len(failed) <= 3, failed
    print("mesh C:", *[l for l in mesh_c.log().splitlines() if "core" in l and "debug" not in l], sep="\n")
    one_endpoint(mesh_a, c_endpoint, "the partition")


def test_restarted_mesh_on_host_c_comes_back_in_mesh_a(network, tmp_path):
    topology = three_hosts(network, tmp_path)
    hosts, meshes = topology.hosts, topology.meshes
    c_endpoint = f"{hosts['c'].address}:{CALLBACK}"
    answers_from_every_replica(topology, "before")
    meshes["c"].kill()
    wait_until(lambda: not in_rotation(meshes["a"], c_endpoint), 20, f"{c_endpoint} leaves rotation")
    for i in range(4):
        state, text = ask(hosts["a"], f"while C is down {i}")
        assert state == "completed" and replica_of(text).startswith("b"), (state, text)
    meshes["c"].start()
    restarted = time.monotonic()
    wait_until(lambda: in_rotation(meshes["a"], c_endpoint), 60, f"{c_endpoint} back in rotation")
    print(f"mesh C back in mesh A's rotation {time.monotonic() - restarted:.1f}s after it started again")
    assert meshes["c"].process.count(lambda l: "replica restored" in l) == 2, meshes["c"].log()[-3000:]
    answers_from_every_replica(topology, "after")
    one_endpoint(meshes["a"], c_endpoint, "its restart")


def direct(network, tmp_path, rewrite=True):
    """Core and mesh A (mesh-a-direct.yaml) on host A; a replica on host B registers with mesh A."""
    hosts = {name: network.host(name) for name in "ab"}
    config = example("mesh-a-direct.yaml", hosts, tmp_path)
    if not rewrite:
        config = config.replace("rewrite_loopback_callbacks: true", "rewrite_loopback_callbacks: false")
        assert "rewrite_loopback_callbacks: false" in config
    start_core(hosts["a"], tmp_path / "core")
    mesh = HostMesh(hosts["a"], tmp_path / "mesh-a", config).start()
    replica = SdkReplica(hosts["b"], tmp_path, "sdk", f"{hosts['a'].address}:{REGISTRY}")
    return hosts, mesh, replica


def test_replica_on_another_host_sending_localhost_is_reached_at_its_address(network, tmp_path):
    hosts, mesh, replica = direct(network, tmp_path)
    registration = replica.registration()
    assert registration["success"], (registration, mesh.log()[-3000:])
    used = f"{hosts['b'].address}:{replica.port}"
    line = mesh.process.wait_line(lambda l: "callback address rewritten" in l, timeout=5)
    assert f"localhost:{replica.port}" in line and used in line, line
    assert [e["address"] for e in mesh.endpoints()] == [used], mesh.pools()
    for i in range(3):
        assert ask(hosts["a"], f"direct {i}") == ("completed", f"[sdk] direct {i}")


def test_without_the_rewrite_a_localhost_callback_from_another_host_is_refused(network, tmp_path):
    hosts, mesh, replica = direct(network, tmp_path, rewrite=False)
    registration = replica.registration()
    given = f"localhost:{replica.port}"
    assert "callback address rewritten" not in mesh.log()
    print("refused:", registration["error"])
    assert not registration["success"], registration
    assert given in registration["error"] and hosts["b"].address in registration["error"], registration
    assert "rewrite_loopback_callbacks is off" in registration["error"], registration
    assert not mesh.endpoints(), "nothing joined"


@pytest.mark.parametrize("case", ["server certificate names another host", "client identity not allowed",
                                  "plaintext"])
def test_mesh_a_refuses_a_host_b_that_is_not_what_it_should_be(network, tmp_path, case):
    hosts = {name: network.host(name) for name in "ab"}
    ca = certs.dev(tmp_path / "ca")
    a_certs = host_certificates(tmp_path / "certs-a", ca, server_names(hosts["a"]), "spiffe://bindu-mesh/mesh-a")
    # Another host of the network, by name and address: not host B.
    other_host = f"host-c.internal,{network.subnet}.99"
    b_names = other_host if case == "server certificate names another host" else server_names(hosts["b"])
    b_identity = "spiffe://bindu-mesh/intruder" if case == "client identity not allowed" else "spiffe://bindu-mesh/mesh-b"
    b_certs = host_certificates(tmp_path / "certs-b", ca, b_names, b_identity)
    mesh_a = HostMesh(hosts["a"], tmp_path / "mesh-a", example("mesh-a.yaml", hosts, a_certs)).start()
    if case == "plaintext":
        replica = SdkReplica(hosts["b"], tmp_path, "b1", f"{hosts['a'].address}:{REGISTRY}")
        registration = replica.registration(timeout=30)
        print("replica b1:", registration)
        assert not registration["success"] and "UNAVAILABLE" in registration["error"], registration
        assert all(not p["endpoints"] for p in mesh_a.pools()), mesh_a.pools()
        line = mesh_a.process.wait_line(lambda l: "TLS handshake with caller failed" in l, timeout=5)
        print("mesh A:", line)
        assert hosts["b"].address in line, line
        return
    HostMesh(hosts["b"], tmp_path / "mesh-b", example("mesh-b.yaml", hosts, b_certs)).start()
    replica = SdkReplica(hosts["b"], tmp_path, "b1", f"127.0.0.1:{REGISTRY}")
    if case == "client identity not allowed":
        line = mesh_a.process.wait_line(lambda l: "names no allowed identity" in l, timeout=30)
        assert "spiffe://bindu-mesh/intruder" in line and hosts["b"].address in line, line
        registration = replica.registration()
        print("mesh A:", line, "\nreplica b1:", registration)
        assert not registration["success"] and "no allowed identity" in registration["error"], registration
        assert all(not p["endpoints"] for p in mesh_a.pools()), mesh_a.pools()
        return
    # Mesh B's certificate names another address than the one mesh A dials: the handshake fails.
    line = mesh_a.process.wait_line(lambda l: "TLS handshake with replica failed" in l, timeout=30)
    print(line)
    b_endpoint = f"{hosts['b'].address}:{CALLBACK}"
    time.sleep(3)  # a few probes
    found = endpoints_at(mesh_a, b_endpoint)
    assert found and all(e["state"] != "healthy" for e in found), mesh_a.pools()


def test_mesh_b_reaches_mesh_a_by_its_ip_address_over_mtls(network, tmp_path):
    """mesh-b.yaml with mesh A's address as an IP in place of its name: the certificate's IP SAN
    is checked against the address dialled."""
    hosts = {name: network.host(name) for name in "ab"}
    ca = certs.dev(tmp_path / "ca")
    cert_dirs = {name: host_certificates(tmp_path / f"certs-{name}", ca, server_names(host),
                                         f"spiffe://bindu-mesh/mesh-{name}") for name, host in hosts.items()}
    start_core(hosts["a"], tmp_path / "core")
    HostMesh(hosts["a"], tmp_path / "mesh-a", example("mesh-a.yaml", hosts, cert_dirs["a"])).start()
    config = example("mesh-b.yaml", hosts, cert_dirs["b"]).replace("host-a.internal", hosts["a"].address)
    mesh_b = HostMesh(hosts["b"], tmp_path / "mesh-b", config).start()
    replica = SdkReplica(hosts["b"], tmp_path, "b1", f"127.0.0.1:{REGISTRY}")
    answered = lambda l: l.startswith(("registered ", "registration failed "))  # noqa: E731
    waiting = lambda l: "waiting for the core to accept the agent" in l  # noqa: E731
    wait_until(lambda: replica.process.count(answered) or mesh_b.process.count(waiting), 60,
               "b1 is answered or mesh B says it waits for mesh A")
    if not replica.process.count(answered):
        raise AssertionError(f"mesh B waits for mesh A: {mesh_b.process.wait_line(waiting, timeout=1)}")
    registration = replica.registration()
    assert registration["success"], registration
    assert ask(hosts["a"], "by address") == ("completed", "[b1] by address")
