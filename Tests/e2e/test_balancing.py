"""How a pool spreads calls: least outstanding calls, a per-replica limit with a queue in the
mesh, and the in-memory refusal with several cores. Real mesh, real replicas, real cores."""
import concurrent.futures
import re
import threading

import grpc
import pytest

from harness import Mesh, Replica, agent_config, free_port, http_get


def start(tmp_path, core, cleanup, extra_yaml="", replicas=2, replica_args=()):
    workdir = tmp_path / "mesh"
    workdir.mkdir(exist_ok=True)
    mesh = Mesh(workdir, core.port, extra_yaml)
    cleanup.append(mesh)
    mesh.start()
    config = agent_config(a2a_port=free_port())
    started = []
    for index in range(1, replicas + 1):
        replica = Replica(tmp_path, f"r{index}", core_port=mesh.registry_port, agent_config=config,
                          extra_args=list(replica_args))
        cleanup.append(replica)
        started.append(replica)
    return mesh, started


def caller(pb, mesh):
    messages, services = pb
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{mesh.callback_port}"))

    def ask(text, timeout=10):
        request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=text)])
        return stub.HandleMessages(request, timeout=timeout).content
    return ask


def replica_of(answer):
    return re.match(r"\[(r\d+)\]", answer).group(1)


def max_running(call_log):
    """The most calls running at once, from the replicas' call log (line order, no clock)."""
    running = most = 0
    for line in call_log.read_text().splitlines():
        running += 1 if line.startswith("begin ") else -1
        most = max(most, running)
    return most


@pytest.mark.parametrize("policy", ["least_request", "round_robin"])
def test_calls_go_to_the_replica_with_fewest_calls_outstanding(tmp_path, core, cleanup, pb, policy):
    """One slow call holds r1 (or r2); short calls made meanwhile all go to the idle replica with
    least_request, and alternate with round_robin."""
    mesh, _ = start(tmp_path, core, cleanup, f"balancer:\n  policy: {policy}\n")
    ask = caller(pb, mesh)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(ask, "sleep:3000 slow")
        # Wait until the slow call runs on its replica (the mesh logs nothing per call here).
        busy = None
        for _ in range(100):
            status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")
            if re.search(r'bindu_mesh_calls_in_flight\{pool="echo-agent"\} 1', body):
                busy = True
                break
            threading.Event().wait(0.05)
        assert busy, "the slow call did not start"
        quick = [replica_of(ask(f"quick {i}")) for i in range(4)]
        slow_by = replica_of(slow.result())
    idle = ({"r1", "r2"} - {slow_by}).pop()
    print(policy, "slow call on", slow_by, "quick calls on", quick)
    if policy == "least_request":
        assert quick == [idle] * 4
    else:
        assert sorted(quick) == sorted([idle, idle, slow_by, slow_by])


def test_a_per_replica_limit_makes_calls_wait_in_the_mesh(tmp_path, core, cleanup, pb):
    """max_concurrent_calls: 1 on two replicas: six calls at once run two at a time, never two on
    one replica, and all complete; the queue's wait is measured."""
    log = tmp_path / "calls.log"
    mesh, replicas = start(tmp_path, core, cleanup, "balancer:\n  max_concurrent_calls: 1\n",
                           replica_args=["--call-log", str(log)])
    ask = caller(pb, mesh)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: ask(f"sleep:300 call {i}"), range(6)))
    assert sorted(a.split("] ", 1)[1] for a in answers) == [f"call {i}" for i in range(6)]
    per_replica = {name: [l for l in log.read_text().splitlines() if l.endswith(f" {name}")] for name in ("r1", "r2")}
    for name, lines in per_replica.items():
        running = 0
        for line in lines:
            running += 1 if line.startswith("begin ") else -1
            assert running <= 1, f"{name} ran two calls at once: {lines}"
    assert max_running(log) == 2
    _, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")
    waited = re.search(r'bindu_mesh_queue_wait_seconds_count\{pool="echo-agent"\} (\d+)', body)
    assert waited and int(waited.group(1)) >= 4, body[-2000:]
    assert re.search(r'bindu_mesh_queued_calls\{pool="echo-agent"\} 0', body)


def test_a_full_queue_refuses_and_a_queued_call_leaves_at_its_deadline(tmp_path, core, cleanup, pb):
    mesh, _ = start(tmp_path, core, cleanup, "balancer:\n  max_concurrent_calls: 1\n  max_queued_calls: 1\n",
                    replicas=1)
    ask = caller(pb, mesh)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(ask, "sleep:2000 running")
        threading.Event().wait(0.5)
        queued = pool.submit(ask, "sleep:10 queued")
        threading.Event().wait(0.5)
        with pytest.raises(grpc.RpcError) as full:
            ask("one too many")
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 'pool "echo-agent"' in full.value.details() and "queued" in full.value.details()
        assert running.result().endswith("running")
        assert queued.result().endswith("queued")
    # A call that waits longer than its deadline leaves the queue with DEADLINE_EXCEEDED (the
    # mesh's deadline and the client's own cancel race: either takes it out) ...
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(ask, "sleep:1500 again")
        threading.Event().wait(0.5)
        with pytest.raises(grpc.RpcError) as late:
            ask("short deadline", timeout=0.3)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        running.result()
    # ... the queue is empty again, and no slot is lost: the replica takes calls again.
    _, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")
    assert re.search(r'bindu_mesh_queued_calls\{pool="echo-agent"\} 0', body), body[-1500:]
    assert ask("after").endswith("after")


def test_several_cores_refuse_an_in_memory_agent_and_warn_about_an_unnamed_one(tmp_path, cleanup, pb):
    """With two cores, a replica whose config names in-memory storage is refused with the reason;
    one whose config names neither storage nor scheduler joins, with a warning in /pools."""
    from harness import Core
    cores = []
    for index in range(2):
        workdir = tmp_path / f"core{index}"
        workdir.mkdir()
        core = Core(workdir)
        cleanup.append(core)
        cores.append(core.start())
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, None, cores=[(core.port, f"http://localhost:{free_port()}") for core in cores])
    cleanup.append(mesh)
    mesh.start()

    memory = agent_config(name="memory-agent", a2a_port=free_port(), storage={"type": "memory"})
    refused = Replica(tmp_path, "m1", core_port=mesh.registry_port, agent_config=memory)
    cleanup.append(refused)
    assert not refused.registration["success"]
    assert "2 cores" in refused.registration["error"] and "memory" in refused.registration["error"]

    unnamed = Replica(tmp_path, "u1", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=free_port()))
    cleanup.append(unnamed)
    assert unnamed.registration["success"], unnamed.registration
    pools = {p["agent"]: p for p in mesh.pools()}
    assert "memory-agent" not in pools or not pools["memory-agent"]["endpoints"]
    warnings = pools["echo-agent"]["warnings"]
    assert warnings and "STORAGE_TYPE" in warnings[0], pools["echo-agent"]
    assert {c["core"] for c in pools["echo-agent"]["cores"]} == {f"127.0.0.1:{c.port}" for c in cores}
    mesh.process.wait_line(lambda l: "names no storage" in l, timeout=10)
