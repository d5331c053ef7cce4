"""Config reload while calls flow: a SIGHUP that adds a pool, changes a replica list and a
timeout fails no call and the new pool answers; a broken file on SIGHUP fails no call, keeps the
config in force and is logged with its file, line and key; `POST /reload` needs the admin token."""
import json
import re
import signal
import socket
import time
import urllib.request

import grpc
import pytest

from faults import Scenario, run_load, stubs
from harness import Mesh, Replica, a2a_ask, agent_config, free_port, http_get, wait_until
from test_admin_changes import TOKEN, post


@pytest.fixture
def scenario(tmp_path, pb):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    scenario = Scenario(tmp_path, replicas=3, admin_yaml=f"  token_file: {token_file}\n")
    yield scenario
    scenario.stop()


def metric(scenario, name, **labels):
    status, body = http_get(f"http://127.0.0.1:{scenario.mesh.admin_port}/metrics")
    assert status == 200
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in body.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    return 0.0


def with_replicas(config: str, replicas) -> str:
    """The config with echo-agent's replica list replaced."""
    lines = "".join(f"      - 127.0.0.1:{r.port}\n" for r in replicas)
    return re.sub(r"    replicas:\n(      - .*\n)+", "    replicas:\n" + lines, config, count=1)


def ask(port, text, timeout=None):
    messages, services = stubs()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=text)])
        return services.AgentHandlerStub(channel).HandleMessages(request, timeout=timeout).content


def ask_once_ready(port, text):
    """The answer once the pool's replica has passed its first probe (a new pool's replicas start
    pending, as at start)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return ask(port, text, timeout=5)
        except grpc.RpcError as error:
            if time.monotonic() > deadline or "pending" not in (error.details() or ""):
                raise
            time.sleep(0.2)


def test_sighup_adds_a_pool_changes_replicas_and_a_timeout_without_failing_a_call(scenario, tmp_path):
    r1, r2, r3 = scenario.replicas
    r4 = Replica(tmp_path, "r4", extra_args=["--log-calls"])
    config = scenario.mesh.config_path.read_text()
    second_port = free_port()
    new = (with_replicas(config, [r1, r2, r4])
           + f"  - agent: second-agent\n    listen: 127.0.0.1:{second_port}\n    replicas:\n"
           + f"      - 127.0.0.1:{r3.port}\n"
           + "upstream:\n  default_call_timeout: 1s\n")

    def reload():
        scenario.mesh.config_path.write_text(new)
        scenario.mesh.process.send(signal.SIGHUP)

    try:
        # Before: a call without a deadline waits for its replica (the default is 60 s).
        assert ask(scenario.listen, "sleep:1500 before").endswith("before")
        result = run_load(scenario, reload, duration=7.0, fault_at=1.5, settle=3.0, workers=4)
        print(result)
        assert result["failed"] == 0 and result["lost"] == 0, result
        assert result["completed"] > 50, result
        late = set(result["late_answers"])
        assert "r4" in late and "r3" not in late, f"after the reload the pool is r1, r2, r4: {result}"

        # The new pool answers, from its own replica.
        assert ask_once_ready(second_port, "hello second").startswith("[r3]")
        # A call without grpc-timeout now ends at the reloaded default deadline.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            ask(scenario.listen, "sleep:5000 after")
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 4.0
        assert metric(scenario, "bindu_mesh_config_reloads_total", result="applied") == 1
        assert metric(scenario, "bindu_mesh_config_reloads_total", result="refused") == 0
        pools = {p["agent"]: p for p in scenario.mesh.pools()}
        assert set(pools) == {"echo-agent", "second-agent"}, pools.keys()
        output = scenario.mesh.process.output()
        assert "config reloaded" in output and "pools added: second-agent" in output
    finally:
        r4.stop()


def test_a_broken_file_on_sighup_keeps_the_config_in_force_and_fails_no_call(scenario):
    config = scenario.mesh.config_path.read_text()
    broken = config + "upstream:\n  default_call_timout: 1s\n"

    def reload():
        scenario.mesh.config_path.write_text(broken)
        scenario.mesh.process.send(signal.SIGHUP)

    result = run_load(scenario, reload, duration=5.0, fault_at=1.0, settle=1.5, workers=4)
    print(result)
    assert result["failed"] == 0 and result["lost"] == 0, result
    assert set(result["late_answers"]) == {"r1", "r2", "r3"}, result
    wait_until(lambda: "config reload refused" in scenario.mesh.process.output(), 10, "the refusal is logged")
    line = next(l for l in scenario.mesh.process.output().splitlines() if "config reload refused" in l)
    assert str(scenario.mesh.config_path) in line and "default_call_timout" in line, line
    assert re.search(r":\d+", line.split(str(scenario.mesh.config_path))[1]), f"the line is named: {line}"
    assert metric(scenario, "bindu_mesh_config_reloads_total", result="refused") == 1
    # The config in force stays: no deadline is added to a call without one.
    assert ask(scenario.listen, "sleep:1500 still").endswith("still")

    # The same file through the admin listener: 422 with the reason, and still nothing changes.
    status, body = post(scenario, "/reload", token=TOKEN)
    assert status == 422, (status, body)
    answer = json.loads(body)
    assert answer["result"] == "refused" and "default_call_timout" in answer["error"], answer
    assert metric(scenario, "bindu_mesh_config_reloads_total", result="refused") == 2


def test_a_pool_not_registered_with_a_core_moves_to_a_new_listen_address(scenario):
    old_port = scenario.listen
    new_port = free_port()
    config = scenario.mesh.config_path.read_text()
    messages, services = stubs()
    channel = grpc.insecure_channel(f"127.0.0.1:{old_port}")
    in_flight = services.AgentHandlerStub(channel).HandleMessages.future(
        messages.HandleRequest(messages=[messages.ChatMessage(role="user", content="sleep:1500 in flight")]),
        timeout=10)
    time.sleep(0.3)
    # The pool had no `listen` (a port of the system's): now it has one.
    moved = config.replace("  - agent: echo-agent\n", f"  - agent: echo-agent\n    listen: 127.0.0.1:{new_port}\n", 1)
    assert moved != config
    scenario.mesh.config_path.write_text(moved)
    status, body = post(scenario, "/reload", token=TOKEN)
    assert status == 200 and "pool echo-agent: listener" in json.loads(body)["changes"], body
    assert ask(new_port, "moved", timeout=5).endswith("moved")
    assert in_flight.result().content.endswith("in flight"), "a call in flight on the old listener finishes"
    channel.close()
    wait_until(lambda: not port_open(old_port), 15, "the old listener closes once its calls have finished")
    assert scenario.mesh.pools()[0]["callback_listen"].endswith(f":{new_port}")


def test_post_reload_needs_the_token_then_applies_and_removes_a_pool(scenario):
    r1, r2, r3 = scenario.replicas
    config = scenario.mesh.config_path.read_text()
    second_port = free_port()
    scenario.mesh.config_path.write_text(
        config + f"  - agent: second-agent\n    listen: 127.0.0.1:{second_port}\n    replicas:\n"
        f"      - 127.0.0.1:{r3.port}\n")
    status, body = post(scenario, "/reload")
    assert status == 403 and "bearer token is needed" in body, body
    assert [p["agent"] for p in scenario.mesh.pools()] == ["echo-agent"], "a refused change changes nothing"
    assert metric(scenario, "bindu_mesh_config_reloads_total", result="applied") == 0

    status, body = post(scenario, "/reload", token=TOKEN)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["result"] == "applied" and "pools added: second-agent" in answer["changes"], answer
    assert ask_once_ready(second_port, "hi").startswith("[r3]")

    # Removed again: its listener closes, once its calls in flight have finished.
    scenario.mesh.config_path.write_text(config + "state:\n  dir: elsewhere\n")
    messages, services = stubs()
    channel = grpc.insecure_channel(f"127.0.0.1:{second_port}")
    stub = services.AgentHandlerStub(channel)
    in_flight = stub.HandleMessages.future(
        messages.HandleRequest(messages=[messages.ChatMessage(role="user", content="sleep:1500 in flight")]),
        timeout=10)
    time.sleep(0.3)
    status, body = post(scenario, "/reload", token=TOKEN)
    assert status == 200, body
    answer = json.loads(body)
    assert "pools removed: second-agent" in answer["changes"], answer
    assert answer["left_for_next_start"] == ["state.dir"], answer
    assert in_flight.result().content.endswith("in flight"), "a call in flight on a removed pool finishes"
    channel.close()
    wait_until(lambda: [p["agent"] for p in scenario.mesh.pools()] == ["echo-agent"], 10, "the pool is gone")
    with pytest.raises(grpc.RpcError):
        ask(second_port, "gone", timeout=2)
    assert "take effect at the next start" in scenario.mesh.process.output()


def test_a_reload_registers_an_added_pool_with_the_core_and_unregisters_a_removed_one(tmp_path, core, cleanup, pb):
    """With the real core: a declared pool added by a reload is registered (its A2A server
    answers through the mesh); removed by the next reload, it is unregistered (the core stops
    its A2A server)."""
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, core.port)
    cleanup.append(mesh)
    mesh.start()
    replica = Replica(tmp_path, "r1")
    cleanup.append(replica)
    a2a_port = free_port()
    config = mesh.config_path.read_text()
    pool = (f"pools:\n  - agent: echo-agent\n    listen: 127.0.0.1:{free_port()}\n"
            f"    config: {json.dumps(agent_config(a2a_port=a2a_port))}\n"
            f"    replicas: [127.0.0.1:{replica.port}]\n")
    mesh.config_path.write_text(config + pool)
    mesh.process.send(signal.SIGHUP)
    url = f"http://localhost:{a2a_port}/"
    assert a2a_ask(url, "added") == ("completed", "[r1] added")
    assert mesh.pools()[0]["registered_with_core"]

    # Another port for a pool registered with the core: the core keeps calling the address it
    # was given, so the reload keeps it and says so.
    old_port = mesh.pool_port("echo-agent")
    mesh.config_path.write_text(config + pool.replace(f"127.0.0.1:{old_port}", f"127.0.0.1:{free_port()}"))
    mesh.process.send(signal.SIGHUP)
    wait_until(lambda: "pools[echo-agent].listen" in mesh.process.output(), 15, "the listen change is left for the next start")
    assert mesh.pools()[0]["callback_listen"].endswith(f":{old_port}")
    assert a2a_ask(url, "still here") == ("completed", "[r1] still here")

    mesh.config_path.write_text(config)
    mesh.process.send(signal.SIGHUP)
    wait_until(lambda: "unregistered from the core" in mesh.process.output(), 30, "the pool is unregistered")
    wait_until(lambda: mesh.pools() == [], 10, "the pool is gone")
    with pytest.raises(OSError):
        a2a_ask_once(url)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def a2a_ask_once(url):
    """One `message/send` without waiting for the server (it must be gone)."""
    deadline = time.monotonic() + 15
    while True:
        body = json.dumps({"jsonrpc": "2.0", "id": "1", "method": "message/send", "params": {}}).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
        if time.monotonic() > deadline:
            return
        time.sleep(0.5)
