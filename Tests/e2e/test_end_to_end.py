"""bindu-mesh between the real Bindu core and echo replicas, over real sockets."""
import collections
import re
import signal
import socket
import time

import grpc
import pytest

from harness import Mesh, Replica, a2a_ask, agent_card, agent_config, free_port, Process, BIN_DIR, wait_until


def start_mesh(tmp_path, core, cleanup, extra_yaml="", registry_yaml=""):
    workdir = tmp_path / "mesh"
    workdir.mkdir(exist_ok=True)
    mesh = Mesh(workdir, core.port, extra_yaml, registry_yaml)
    cleanup.append(mesh)
    return mesh.start()


def start_replicas(tmp_path, cleanup, count, registry_port, config, **kwargs):
    replicas = []
    for index in range(1, count + 1):
        replica = Replica(tmp_path, f"r{index}", core_port=registry_port, agent_config=config, **kwargs)
        cleanup.append(replica)
        replicas.append(replica)
    return replicas


def answered_by(text):
    match = re.match(r"\[(r\d+)\]", text)
    assert match, f"unexpected answer {text!r}"
    return match.group(1)


def test_three_registered_replicas_take_one_call_at_a_time_in_turn(tmp_path, core, cleanup):
    mesh = start_mesh(tmp_path, core, cleanup)
    a2a_port = free_port()
    replicas = start_replicas(tmp_path, cleanup, 3, mesh.registry_port, agent_config(a2a_port=a2a_port))
    url = f"http://localhost:{a2a_port}/"

    dids = {r.registration["did"] for r in replicas}
    assert all(r.registration["success"] for r in replicas)
    assert len(dids) == 1 and next(iter(dids)).startswith("did:")
    assert len({r.registration["agent_id"] for r in replicas}) == 3, "each replica gets its own membership id"

    counts = collections.Counter()
    for i in range(30):
        state, text = a2a_ask(url, f"message {i}")
        assert state == "completed"
        assert text.endswith(f"message {i}")
        counts[answered_by(text)] += 1
    print("answers per replica:", dict(counts))
    assert counts == {"r1": 10, "r2": 10, "r3": 10}

    card = agent_card(url)
    card_dids = [e["uri"] for e in card["capabilities"]["extensions"] if e["uri"].startswith("did:")]
    assert card_dids == list(dids)


def test_declared_pool_with_static_replicas_registers_without_any_replica_registering(tmp_path, core, cleanup):
    replicas = []
    for name in ("r1", "r2", "r3"):
        replica = Replica(tmp_path, name)
        cleanup.append(replica)
        replicas.append(replica)
    a2a_port = free_port()
    config = agent_config(a2a_port=a2a_port)
    pool = (
        "pools:\n"
        "  - agent: echo-agent\n"
        "    config:\n"
        f"      author: {config['author']}\n      name: echo-agent\n      description: echo agent\n"
        f"      deployment: {{url: \"http://localhost:{a2a_port}\", expose: true}}\n"
        "    skills:\n      - name: echo\n        description: repeats what it is told\n"
        "    replicas:\n" + "".join(f"      - 127.0.0.1:{r.port}\n" for r in replicas)
    )
    mesh = start_mesh(tmp_path, core, cleanup, pool)
    mesh.wait_registered()
    url = f"http://localhost:{a2a_port}/"
    counts = collections.Counter()
    for i in range(9):
        state, text = a2a_ask(url, f"static {i}")
        assert state == "completed"
        counts[answered_by(text)] += 1
    assert counts == {"r1": 3, "r2": 3, "r3": 3}
    assert [s["name"] for s in agent_card(url)["skills"]] == ["echo"]


def test_mesh_registers_again_after_the_core_restarts(tmp_path, core, cleanup):
    mesh = start_mesh(tmp_path, core, cleanup)
    a2a_port = free_port()
    replicas = start_replicas(tmp_path, cleanup, 2, mesh.registry_port, agent_config(a2a_port=a2a_port))
    url = f"http://localhost:{a2a_port}/"
    assert a2a_ask(url, "before")[0] == "completed"

    core.stop()
    killed = time.monotonic()
    core.start()  # same working directory: same keys, same DID
    mesh.wait_registered(times=2, timeout=90)
    recovered = time.monotonic() - killed
    print(f"the mesh registered again {recovered:.1f}s after the core was killed")

    state, text = a2a_ask(url, "after")
    assert state == "completed" and text.endswith("after")
    assert agent_card(url)["capabilities"]["extensions"][0]["uri"] == replicas[0].registration["did"]


def test_replicas_that_unregister_or_answer_neither_heartbeat_nor_probe_get_no_more_calls(tmp_path, core, cleanup, pb):
    messages, services = pb
    mesh = start_mesh(tmp_path, core, cleanup, registry_yaml="  replica_timeout: 2s\n")
    config = agent_config(a2a_port=free_port())
    leaving = Replica(tmp_path, "r1", core_port=mesh.registry_port, agent_config=config)
    silent = Replica(tmp_path, "r2", core_port=mesh.registry_port, agent_config=config, heartbeat=0)
    staying = Replica(tmp_path, "r3", core_port=mesh.registry_port, agent_config=config)
    cleanup.extend([leaving, silent, staying])

    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.callback_port}")
    stub = services.AgentHandlerStub(channel)
    ask = lambda text: stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=text)]), timeout=10).content

    assert {answered_by(ask("x")) for _ in range(3)} == {"r1", "r2", "r3"}

    leaving.process.send(signal.SIGTERM)
    leaving.process.wait_line(lambda l: l.startswith("unregistered success=true"))
    # A replica that never heartbeats (as the Kotlin SDK) stays while its probes pass ...
    mesh.process.wait_line(lambda l: "replica kept by its health probes" in l and "(" in l, timeout=15)
    assert {answered_by(ask("y")) for _ in range(6)} == {"r2", "r3"}
    # ... and is evicted once it shows neither.
    silent.stop(signal.SIGKILL)
    member = silent.registration["agent_id"]
    wait_until(lambda: all(e.get("member") != member for p in mesh.pools() for e in p["endpoints"]), 15,
               "the silent replica evicted from /pools")
    assert "replica evicted: no heartbeat and no passing probe" in mesh.process.output()
    assert {answered_by(ask("z")) for _ in range(6)} == {"r3"}


def test_streaming_delivers_every_chunk_in_order_with_metadata(tmp_path, core, cleanup, pb):
    messages, services = pb
    mesh = start_mesh(tmp_path, core, cleanup)
    start_replicas(tmp_path, cleanup, 2, mesh.registry_port, agent_config(a2a_port=free_port()))
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{mesh.callback_port}"))
    words = [f"w{i}" for i in range(50)]
    request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=" ".join(words))])
    call = stub.HandleMessagesStream(request, timeout=10, metadata=[("x-echo-trace", "abc123")])
    chunks = list(call)
    assert [c.content for c in chunks] == words
    assert [c.is_final for c in chunks] == [False] * 49 + [True]
    assert len({c.metadata["replica"] for c in chunks}) == 1
    assert ("x-echo-trace", "abc123") in call.initial_metadata()
    assert dict(call.trailing_metadata())["x-replica"] == chunks[0].metadata["replica"]
    assert call.code() == grpc.StatusCode.OK

    # Unary metadata and errors pass through unchanged.
    response, call = stub.HandleMessages.with_call(request, timeout=10, metadata=[("x-echo-a", "1")])
    assert ("x-echo-a", "1") in call.initial_metadata()
    with pytest.raises(grpc.RpcError) as failure:
        stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content="fail:now")]), timeout=10)
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert "failed as asked" in failure.value.details()
    capabilities = stub.GetCapabilities(messages.GetCapabilitiesRequest(), timeout=10)
    assert capabilities.supports_streaming
    assert stub.HealthCheck(messages.HealthCheckRequest(), timeout=10).healthy


def test_deadline_of_the_caller_bounds_the_replica_call(tmp_path, core, cleanup, pb):
    messages, services = pb
    mesh = start_mesh(tmp_path, core, cleanup)
    start_replicas(tmp_path, cleanup, 1, mesh.registry_port, agent_config(a2a_port=free_port()))
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{mesh.callback_port}"))
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failure:
        stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content="sleep:5000 late")]), timeout=1)
    elapsed = time.monotonic() - started
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 4.5, "the call must end at the caller's deadline, not when the replica answers"


def test_pool_without_replicas_answers_unavailable_naming_the_pool(tmp_path, core, cleanup, pb):
    messages, services = pb
    mesh = start_mesh(tmp_path, core, cleanup, "pools:\n  - agent: lonely-agent\n")
    listen = mesh.pool_port("lonely-agent")
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{listen}"))
    with pytest.raises(grpc.RpcError) as failure:
        stub.HandleMessages(messages.HandleRequest(), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 'no replica in pool "lonely-agent"' in failure.value.details()


def test_bad_registrations_get_success_false_with_a_reason(tmp_path, core, cleanup, pb):
    messages, services = pb
    import json
    mesh = start_mesh(tmp_path, core, cleanup)
    registry = services.BinduServiceStub(grpc.insecure_channel(f"127.0.0.1:{mesh.registry_port}"))
    register = lambda config_json, address="localhost:50999": registry.RegisterAgent(
        messages.RegisterAgentRequest(config_json=config_json, grpc_callback_address=address), timeout=60)

    bad_json = register("{not json")
    assert not bad_json.success and "not valid JSON" in bad_json.error
    no_name = register('{"author": "a@b.c"}')
    assert not no_name.success and '"name"' in no_name.error
    bad_address = register(json.dumps(agent_config()), address="nowhere")
    assert not bad_address.success and "grpc_callback_address" in bad_address.error

    # The core refuses a config its validator rejects; the replica gets the core's error.
    refused = register(json.dumps({"name": "broken-agent"}))
    assert not refused.success and "the core refused" in refused.error

    a2a_port = free_port()
    good = Replica(tmp_path, "r1", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=a2a_port))
    cleanup.append(good)
    assert good.registration["success"]
    conflicting = register(json.dumps(agent_config(a2a_port=a2a_port, description="something else")))
    assert not conflicting.success and '"description"' in conflicting.error

    unknown_beat = registry.Heartbeat(messages.HeartbeatRequest(agent_id="no-such-id"), timeout=5)
    assert not unknown_beat.acknowledged
    unknown_bye = registry.UnregisterAgent(messages.UnregisterAgentRequest(agent_id="no-such-id"), timeout=5)
    assert not unknown_bye.success and "unknown agent_id" in unknown_bye.error
    known_beat = registry.Heartbeat(messages.HeartbeatRequest(agent_id=good.registration["agent_id"]), timeout=5)
    assert known_beat.acknowledged
    assert mesh.process.proc.poll() is None, "the mesh must still run"


def test_sigterm_lets_calls_in_flight_finish_then_unregisters_and_exits_0(tmp_path, core, cleanup, pb):
    messages, services = pb
    import concurrent.futures
    mesh = start_mesh(tmp_path, core, cleanup)
    start_replicas(tmp_path, cleanup, 2, mesh.registry_port, agent_config(a2a_port=free_port()))
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{mesh.callback_port}"))
    request = messages.HandleRequest(messages=[messages.ChatMessage(content="sleep:2000 slow")])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(stub.HandleMessages, request, timeout=20) for _ in range(4)]
        time.sleep(0.7)
        mesh.process.send(signal.SIGTERM)
        answers = [c.result().content for c in calls]
    assert all(a.endswith("slow") for a in answers)
    assert mesh.process.proc.wait(30) == 0
    output = mesh.process.output()
    assert "unregistered from the core" in output
    assert output.index("unregistered from the core") > output.index("shutting down")


@pytest.mark.parametrize("yaml_text, expected", [
    ("core: [unclosed", "not valid YAML"),
    ("core:\n  adress: 127.0.0.1:1\n", "core.adress: unknown key"),
    ("registry:\n  listen: nowhere\n", "registry.listen: expected host:port"),
    ("core:\n  heartbeat_interval: soon\n", "core.heartbeat_interval: expected a positive duration"),
    ("pools:\n  - listen: 127.0.0.1:1\n", "pools[0]: missing key \"agent\""),
])
def test_bad_config_fails_at_start_naming_file_and_key(tmp_path, yaml_text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    process = Process([str(BIN_DIR / "bindu-mesh"), "--config", str(path)], cwd=tmp_path, name="mesh")
    assert process.proc.wait(30) != 0
    output = process.output()
    assert str(path) in output and expected in output, output


def test_messages_over_the_limit_get_resource_exhausted(tmp_path, core, cleanup, pb):
    messages, services = pb
    mesh = start_mesh(tmp_path, core, cleanup)
    start_replicas(tmp_path, cleanup, 1, mesh.registry_port, agent_config(a2a_port=free_port()))
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{mesh.callback_port}"))
    near_limit = "x" * (4 * 1024 * 1024 - 64)
    answer = stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content=near_limit)]), timeout=20)
    assert answer.content.endswith(near_limit[:10]) and len(answer.content) > len(near_limit)
    with pytest.raises(grpc.RpcError) as failure:
        stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content="x" * (5 * 1024 * 1024))]), timeout=20)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than the limit of 4194304" in failure.value.details()


def test_killing_a_replica_while_a2a_messages_flow_leaves_no_task_stuck(tmp_path, core, cleanup):
    import concurrent.futures
    mesh = start_mesh(tmp_path, core, cleanup)
    a2a_port = free_port()
    replicas = start_replicas(tmp_path, cleanup, 3, mesh.registry_port, agent_config(a2a_port=a2a_port))
    url = f"http://localhost:{a2a_port}/"
    assert a2a_ask(url, "warm up")[0] == "completed"

    def ask(i):
        return a2a_ask(url, f"sleep:400 task {i}", timeout=60)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(ask, i) for i in range(30)]
        time.sleep(1.0)
        replicas[1].stop(signal.SIGKILL)
        results = [f.result(timeout=90) for f in futures]
    states = collections.Counter(state for state, _ in results)
    print("task states:", dict(states))
    assert set(states) <= {"completed", "failed"}, "every task ends, none stuck"
    assert states["failed"] <= 6, "only tasks in flight on the killed replica may fail"
    assert states["completed"] >= 24
    assert all(text.startswith(("[r1]", "[r3]")) for state, text in results[-6:] if state == "completed")


def test_a_pool_made_by_registration_takes_the_next_port_when_its_first_is_taken(tmp_path, core, cleanup):
    """`callbacks.first_port` is held by another process: the pool listens on a later port, and
    the core is given that one."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(8)
    taken = squatter.getsockname()[1]
    try:
        workdir = tmp_path / "mesh"
        workdir.mkdir()
        mesh = Mesh(workdir, core.port, first_port=taken)
        cleanup.append(mesh)
        mesh.start()
        a2a_port = free_port()
        replica = Replica(tmp_path, "r1", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=a2a_port))
        cleanup.append(replica)
        assert replica.registration["success"], replica.registration
        line = mesh.process.wait_line(lambda l: "cannot listen for a new pool, trying the next port" in l, timeout=10)
        assert f"127.0.0.1:{taken}" in line, line
        assert mesh.pool_port("echo-agent") > taken
        assert a2a_ask(f"http://localhost:{a2a_port}/", "moved on") == ("completed", "[r1] moved on")
    finally:
        squatter.close()
