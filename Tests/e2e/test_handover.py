"""Upgrading without a gap: a new bindu-mesh process takes over from the running one
(`--take-over`) while the core's A2A messages and direct calls flow. No call fails, the old
process exits 0 without unregistering, the replicas registered before (which never register
again) are still served, and their heartbeats are acknowledged by the new process."""
import threading
import time

import grpc

from harness import BIN_DIR, Mesh, MessageFlow, Process, Replica, agent_config, free_port, wait_until
from test_restarts import endpoints, mesh_dir, registrations, sdk_replicas


class CallLoad:
    """Direct HandleMessages calls to a callback listener from `workers` threads, each on a
    connection of its own, until stopped."""

    def __init__(self, port, pb, workers=4):
        self.messages, self.services = pb
        self.port, self.sent, self.ok, self.failed = port, 0, 0, []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self, n):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        stub = self.services.AgentHandlerStub(channel)
        i = 0
        while not self._stop.is_set():
            i += 1
            text = f"sleep:30 load {n}.{i}"
            request = self.messages.HandleRequest(messages=[self.messages.ChatMessage(role="user", content=text)])
            with self._lock:
                self.sent += 1
            try:
                answer = stub.HandleMessages(request, timeout=10).content
                assert answer.endswith(f"load {n}.{i}"), answer
                with self._lock:
                    self.ok += 1
            except (grpc.RpcError, AssertionError) as error:
                with self._lock:
                    self.failed.append(repr(error))
        channel.close()

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_a_new_process_takes_over_under_load_and_no_call_fails(tmp_path, core, cleanup, pb):
    messages, services = pb
    mesh = Mesh(mesh_dir(tmp_path), core.port)
    cleanup.append(mesh)
    mesh.start()
    a2a_port = free_port()
    kotlin, ts = sdk_replicas(tmp_path, cleanup, mesh.registry_port, agent_config(a2a_port=a2a_port))
    members = [r.registration["agent_id"] for r in (kotlin, ts)]
    wait_until(lambda: len([e for e in endpoints(mesh) if e.get("in_rotation")]) == 2, 30, "both replicas in rotation")
    wait_until(lambda: mesh.pools()[0]["registered_with_core"], 30, "the pool is registered with the core")

    flow = MessageFlow(f"http://localhost:{a2a_port}/", sleep_ms=100)
    cleanup.append(flow)
    flow.wait_completed(3)
    load = CallLoad(mesh.callback_port, pb)
    try:
        time.sleep(1.5)
        handed_over_at = time.monotonic()
        old = mesh.take_over()
        took = time.monotonic() - handed_over_at
        calls_then = {r.name: r.calls() for r in (kotlin, ts)}
        time.sleep(2)
        flow.wait_completed(3, after=time.monotonic() - 0.5, timeout=60)
    finally:
        load.stop()
        flow.stop()
    print(f"hand-over: old process gone {took:.1f}s after the new one started; direct calls ok {load.ok}, "
          f"failed {len(load.failed)}; A2A: {flow.summary()}")
    assert old.proc.returncode == 0, old.output()[-3000:]
    assert load.ok > 50 and not load.failed, load.failed[:3]
    assert all(o.state == "completed" for o in flow.outcomes), [o for o in flow.outcomes if o.state != "completed"][:3]

    before = old.output()
    assert "the new process took over" in before, before[-3000:]
    assert "the agent stays registered with the core" in before
    assert "unregistered from the core" not in before
    after = mesh.process.output()
    assert "callback listener taken over from the previous process" in after, after[-3000:]

    # The replicas registered before are served by the new process and never registered again.
    wait_until(lambda: all(r.calls() > calls_then[r.name] for r in (kotlin, ts)), 30,
               "both replicas take calls from the new process")
    assert [registrations(r) for r in (kotlin, ts)] == [1, 1], "no replica registered again"
    registry = services.BinduServiceStub(grpc.insecure_channel(f"127.0.0.1:{mesh.registry_port}"))
    for member in members:
        assert registry.Heartbeat(messages.HeartbeatRequest(agent_id=member), timeout=10).acknowledged, member
    pools = mesh.pools()
    assert {e.get("member") for e in pools[0]["endpoints"]} == set(members), pools
    wait_until(lambda: mesh.pools()[0]["registered_with_core"], 30, "the new process is registered with the core")


def test_a_second_mesh_on_the_same_state_directory_is_refused(tmp_path, cleanup):
    workdir = mesh_dir(tmp_path)
    first = Mesh(workdir, free_port())
    cleanup.append(first)
    first.start()
    second = Mesh(workdir, free_port())
    cleanup.append(second)
    process = second.launch()
    assert process.proc.wait(30) != 0
    output = process.output()
    assert "another bindu-mesh runs with the state directory" in output and "--take-over" in output, output[-2000:]
    assert first.process.proc.poll() is None


def test_a_take_over_that_fails_leaves_the_running_mesh_serving(tmp_path, cleanup, pb):
    """The new process gets the sockets but cannot start (its admin token file is missing): the
    running mesh never closed anything, goes on serving, and writes its state file again."""
    workdir = mesh_dir(tmp_path)
    mesh = Mesh(workdir, free_port())
    cleanup.append(mesh)
    mesh.start()
    replica = Replica(tmp_path, "r1", extra_args=["--log-calls"])
    cleanup.append(replica)
    broken = workdir / "broken.yaml"
    broken.write_text(mesh.config_path.read_text().replace("admin:\n", "admin:\n  token_file: /nonexistent/token\n", 1)
                      + f"pools:\n  - agent: echo-agent\n    listen: 127.0.0.1:{free_port()}\n"
                      + f"    replicas: [127.0.0.1:{replica.port}]\n")
    new = Process([str(BIN_DIR / "bindu-mesh"), "--config", str(broken), "--take-over"], cwd=workdir, name="new")
    assert new.proc.wait(60) != 0
    assert "cannot start" in new.output(), new.output()[-2000:]
    wait_until(lambda: "the new process did not take over: going on serving" in mesh.process.output(), 15,
               "the running mesh goes on")
    assert mesh.process.proc.poll() is None
    # Its registry takes registrations again (this one is refused for its config, not UNAVAILABLE),
    # and its admin listener answers.
    messages, services = pb
    with grpc.insecure_channel(f"127.0.0.1:{mesh.registry_port}") as channel:
        answer = services.BinduServiceStub(channel).RegisterAgent(
            messages.RegisterAgentRequest(config_json="{}", grpc_callback_address="127.0.0.1:1"), timeout=10)
    assert not answer.success and answer.error, answer
    assert mesh.pools() == []
    assert (workdir / ".bindu-mesh" / "handover.sock").exists()
