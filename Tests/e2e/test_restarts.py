"""Restarts of bindu-mesh and of the real core, liveness without heartbeats, the state file, SIGHUP.

The replicas behave as the shipped SDKs do: the Kotlin SDK registers once and never heartbeats,
the TypeScript SDK heartbeats but ignores the answer; neither registers again nor unregisters.
So a restarted mesh must take them back from its state file (`<state.dir>/registry.json`).
"""
import os
import re
import signal
import socket
import time

import grpc
import pytest

from harness import Mesh, MessageFlow, Replica, a2a_ask, agent_config, free_port, http_get, wait_until

RESTORED = "replica restored"
ANSWERS = ("[kotlin] ", "[ts] ")


def sdk_replicas(tmp_path, cleanup, registry_port, config):
    """A Kotlin-like replica (no heartbeat) and a TypeScript-like one (heartbeats, ignores the
    answer); neither unregisters. Both print `call <text>` for each call."""
    kotlin = Replica(tmp_path, "kotlin", core_port=registry_port, agent_config=config, heartbeat=0,
                     extra_args=("--no-unregister", "--log-calls"))
    cleanup.append(kotlin)
    ts = Replica(tmp_path, "ts", core_port=registry_port, agent_config=config, heartbeat=1,
                 extra_args=("--no-unregister", "--log-calls"))
    cleanup.append(ts)
    assert kotlin.registration["success"] and ts.registration["success"], (kotlin.registration, ts.registration)
    return kotlin, ts


def registrations(replica):
    return replica.process.count(lambda l: l.startswith("registered "))


def endpoints(mesh):
    return [e for pool in mesh.pools() for e in pool["endpoints"]]


def member_endpoint(mesh, member):
    return next((e for e in endpoints(mesh) if e.get("member") == member), None)


def mesh_dir(tmp_path):
    workdir = tmp_path / "mesh"
    workdir.mkdir(exist_ok=True)
    return workdir


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_restarted_mesh_takes_its_replicas_back_without_them_registering_again(tmp_path, core, cleanup, pb, how):
    """SIGKILL (a crash; state in the default `.bindu-mesh` of the working directory) or SIGTERM
    (exit 0; state under --state-dir) while A2A messages flow, then the mesh starts again."""
    messages, services = pb
    workdir = mesh_dir(tmp_path)
    mesh = Mesh(workdir, core.port)
    cleanup.append(mesh)
    if how == "sigkill":
        flags, state_file = (), workdir / ".bindu-mesh" / "registry.json"
    else:
        flags, state_file = ("--state-dir", str(tmp_path / "state")), tmp_path / "state" / "registry.json"
    mesh.start(*flags)
    a2a_port = free_port()
    url = f"http://localhost:{a2a_port}/"
    kotlin, ts = sdk_replicas(tmp_path, cleanup, mesh.registry_port, agent_config(a2a_port=a2a_port))
    replicas = (kotlin, ts)
    members = {r.registration["agent_id"]: r for r in replicas}
    wait_until(lambda: state_file.exists() and all(m in state_file.read_text() for m in members), 30,
               f"{state_file} names both members")

    flow = MessageFlow(url)
    cleanup.append(flow)
    flow.wait_completed(6)
    callback_port = mesh.callback_port  # the port the core was given, which the restart must keep
    if how == "sigkill":
        mesh.kill()
    else:
        assert mesh.terminate() == 0, mesh.process.output()[-3000:]
    down = time.monotonic()
    assert all(m in state_file.read_text() for m in members), "the state outlives the process"

    mesh.restart()
    try:
        wait_until(lambda: mesh.process.count(lambda l: RESTORED in l) >= 2, 60, f"two '{RESTORED}' lines")
    except TimeoutError as error:
        raise AssertionError(f"{error}; mesh output:\n" + mesh.process.output()[-3000:]) from None
    restarted = time.monotonic()
    assert mesh.process.count(lambda l: RESTORED in l) == 2
    calls_then = {r.name: r.calls() for r in replicas}

    after = flow.wait_completed(8, after=restarted, timeout=120)
    wait_until(lambda: all(r.calls() > calls_then[r.name] for r in replicas), 60,
               f"both replicas take calls again: {calls_then} -> { {r.name: r.calls() for r in replicas} }")
    flow.stop()
    print(f"{how}: members restored {restarted - down:.1f}s after the old mesh ended; first message completed "
          f"{min(o.done for o in after) - restarted:.1f}s later; outcomes: {flow.summary()}")
    assert all(o.text.startswith(ANSWERS) for o in after), after
    first = min((o.sent for o in after if o.sent > restarted), default=restarted)
    later = [o for o in flow.outcomes if o.sent > first]
    assert all(o.state == "completed" for o in later), f"once calls go through again, all do: {later}"
    assert [registrations(r) for r in replicas] == [1, 1], "no replica registered again"

    pools = mesh.pools()
    assert [p["agent"] for p in pools] == ["echo-agent"]
    assert pools[0]["callback_listen"].endswith(f":{callback_port}"), pools
    assert {e.get("member") for e in pools[0]["endpoints"]} == set(members), pools
    assert all(e["origin"] == "registered" and e.get("liveness") in ("heartbeat", "probe")
               for e in pools[0]["endpoints"]), pools
    wait_until(lambda: mesh.pools()[0]["registered_with_core"], 30, "the pool is registered with the core")

    registry = services.BinduServiceStub(grpc.insecure_channel(f"127.0.0.1:{mesh.registry_port}"))
    for member in members:
        assert registry.Heartbeat(messages.HeartbeatRequest(agent_id=member), timeout=10).acknowledged, member


def test_replica_that_never_heartbeats_stays_while_its_probes_pass_and_goes_once_killed(tmp_path, core, cleanup):
    mesh = Mesh(mesh_dir(tmp_path), core.port, registry_yaml="  replica_timeout: 3s\n")
    cleanup.append(mesh)
    mesh.start()
    kotlin = Replica(tmp_path, "kotlin", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=free_port()),
                     heartbeat=0, extra_args=("--no-unregister",))
    cleanup.append(kotlin)
    member = kotlin.registration["agent_id"]
    registered = time.monotonic()

    while time.monotonic() < registered + 6:
        endpoint = member_endpoint(mesh, member)
        assert endpoint is not None, (f"member gone {time.monotonic() - registered:.1f}s after registering, "
                                      f"though its probes pass: {mesh.pools()}")
        time.sleep(0.5)
    assert endpoint["liveness"] == "probe", endpoint
    assert "replica evicted" not in mesh.process.output()

    kotlin.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: member_endpoint(mesh, member) is None, 60, "the killed member leaves /pools")
    gone = time.monotonic() - killed
    print(f"killed member gone from /pools after {gone:.1f}s (replica_timeout 3s)")
    assert gone < 3 + 7, "evicted about replica_timeout after its last passing probe"
    mesh.process.wait_line(lambda l: "replica evicted: no heartbeat and no passing probe" in l, timeout=10)


def test_core_restart_is_noticed_without_waiting_for_a_heartbeat(tmp_path, core, cleanup):
    """The core SIGKILLed and started again (same working directory and port) while messages flow;
    the mesh keeps its default 30s heartbeat interval."""
    mesh = Mesh(mesh_dir(tmp_path), core.port, core_heartbeat=None)
    cleanup.append(mesh)
    mesh.start()
    a2a_port = free_port()
    replicas = sdk_replicas(tmp_path, cleanup, mesh.registry_port, agent_config(a2a_port=a2a_port))
    mesh.wait_registered()
    flow = MessageFlow(f"http://localhost:{a2a_port}/")
    cleanup.append(flow)
    flow.wait_completed(4)

    core.stop()
    core.start()
    back = time.monotonic()  # the core's gRPC port is open
    first = min(o.done for o in flow.wait_completed(1, after=back, timeout=120))
    line = mesh.process.wait_line(lambda l: "registered with the core again" in l, timeout=60)
    registered_at = mesh.process.read_at(lambda l: "registered with the core again" in l)
    flow.wait_completed(5, after=back, timeout=60)
    flow.stop()
    recovery = re.search(r"mesh\.recovery_seconds=(\S+)", line)
    print(f"core port open -> first completed message: {first - back:.1f}s; "
          f"-> mesh registered again: {registered_at - back:.1f}s; "
          f"mesh.recovery_seconds={recovery.group(1) if recovery else None}; outcomes: {flow.summary()}")
    assert recovery, line
    assert first - back < 30, "the restart is noticed in seconds, not at the next heartbeat"
    assert all(o.text.startswith(ANSWERS) for o in flow.completed(back))
    assert [registrations(r) for r in replicas] == [1, 1], "the replicas were not asked to register again"


@pytest.mark.parametrize("where", ["default", "config", "flag"])
def test_unreadable_state_file_stops_the_start_naming_the_file(tmp_path, where):
    workdir = mesh_dir(tmp_path)
    state_dir = {"default": workdir / ".bindu-mesh", "config": tmp_path / "kept", "flag": tmp_path / "flagged"}[where]
    mesh = Mesh(workdir, free_port(), extra_yaml=f"state:\n  dir: {state_dir}\n" if where == "config" else "")
    state_dir.mkdir()
    (state_dir / "registry.json").write_bytes(b"\x00\xff\xfe garbage {{{ \x89PNG\r\n")
    process = mesh.launch(*(("--state-dir", str(state_dir)) if where == "flag" else ()))
    try:
        code = process.proc.wait(30)
    finally:
        process.stop()
    output = process.output()
    assert code != 0, output
    named = ".bindu-mesh/registry.json" if where == "default" else str(state_dir / "registry.json")
    assert named in output, output


@pytest.mark.parametrize("where", ["default", "flag"])
def test_missing_state_starts_empty_and_makes_the_folder(tmp_path, cleanup, where):
    workdir = mesh_dir(tmp_path)
    state_dir = workdir / ".bindu-mesh" if where == "default" else tmp_path / "not" / "yet" / "there"
    mesh = Mesh(workdir, free_port())
    cleanup.append(mesh)
    mesh.start(*(("--state-dir", str(state_dir)) if where == "flag" else ()))
    assert mesh.pools() == []
    wait_until(state_dir.is_dir, 15, f"{state_dir} is made")
    assert mesh.process.proc.poll() is None


def test_sighup_does_not_end_a_mesh_without_tls(tmp_path, core, cleanup):
    mesh = Mesh(mesh_dir(tmp_path), core.port)
    cleanup.append(mesh)
    mesh.start()
    a2a_port = free_port()
    url = f"http://localhost:{a2a_port}/"
    replica = Replica(tmp_path, "r1", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=a2a_port))
    cleanup.append(replica)
    assert a2a_ask(url, "before")[0] == "completed"

    for _ in range(2):
        mesh.process.send(signal.SIGHUP)  # the mesh's pid alone, as `kill -HUP`
        time.sleep(1.5)
    assert mesh.process.proc.poll() is None, (f"SIGHUP ended the mesh (exit {mesh.process.proc.returncode}):\n"
                                              + mesh.process.output()[-2000:])
    status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/healthz")
    assert (status, body.strip()) == (200, "ok")
    state, text = a2a_ask(url, "after hup")
    assert (state, text) == ("completed", "[r1] after hup")


def test_a_restored_pool_whose_port_is_taken_listens_on_another_and_a_restarted_core_calls_there(
        tmp_path, core, cleanup):
    """The mesh restarts while another process holds its pool's callback port: the pool listens on
    another port, says so, and registers it with the core. A core that ran on keeps calling the
    address it was first given (its A2A server keeps it); once restarted, it calls the new one."""
    mesh = Mesh(mesh_dir(tmp_path), core.port)
    cleanup.append(mesh)
    mesh.start()
    a2a_port = free_port()
    url = f"http://localhost:{a2a_port}/"
    replica = Replica(tmp_path, "r1", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=a2a_port),
                      heartbeat=0, extra_args=("--no-unregister",))
    cleanup.append(replica)
    assert a2a_ask(url, "before") == ("completed", "[r1] before")
    old_port = mesh.callback_port
    mesh.kill()

    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", old_port))
    squatter.listen(8)
    try:
        mesh.restart()
        line = mesh.process.wait_line(lambda l: "cannot listen on a restored pool's port" in l, timeout=30)
        assert f"mesh.port={old_port}" in line, line
        new_port = mesh.pool_port("echo-agent")
        assert new_port != old_port
        wait_until(lambda: mesh.pools()[0]["registered_with_core"], 60, "the pool is registered with the core")
        assert mesh.process.count(lambda l: "replica restored" in l) == 1

        core.stop()
        core.start()  # same working directory: same keys, same DID
        mesh.wait_registered(times=2, timeout=90)
        assert a2a_ask(url, "after") == ("completed", "[r1] after")
    finally:
        squatter.close()


def test_a_registry_port_held_by_a_bindu_core_stops_the_start_saying_what_holds_it(tmp_path, core, cleanup):
    """A Bindu core on the registry's port (as an SDK started before the mesh runs one): the mesh
    stops at once, naming the process, that it answers BinduService, and the start order."""
    mesh = Mesh(mesh_dir(tmp_path), core.port, registry_port=core.port)
    cleanup.append(mesh)
    process = mesh.launch()
    assert process.proc.wait(timeout=30) != 0
    out = process.output()
    assert re.search(rf"registry\.listen 127\.0\.0\.1:{core.port} is taken by process \d+ \([^)]*bindu[^)]*\), "
                     r"which answers BinduService: a Bindu core", out), out[-3000:]
    assert "start bindu-mesh before the SDKs" in out, out[-3000:]


def test_an_admin_port_held_by_another_process_stops_the_start_naming_it(tmp_path, core, cleanup):
    """Anything else holding a port of the mesh is named, with what it speaks and what to do."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        mesh = Mesh(mesh_dir(tmp_path), core.port)
        mesh.config_path.write_text(mesh.config_path.read_text().replace(
            "admin:\n  listen: 127.0.0.1:0\n", f"admin:\n  listen: 127.0.0.1:{port}\n"))
        cleanup.append(mesh)
        process = mesh.launch()
        assert process.proc.wait(timeout=30) != 0
        out = process.output()
        assert f"admin.listen 127.0.0.1:{port} is taken by process {os.getpid()} (" in out, out[-3000:]
        assert "which does not answer gRPC in plaintext" in out and "set admin.listen to a free port" in out, out[-3000:]
    finally:
        holder.close()
