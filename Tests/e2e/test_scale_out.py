"""Bindu's scale-out: three `bindu serve --grpc` cores sharing one Redis scheduler queue and one
PostgreSQL storage, first with a replica registered with each core directly (the Bindu facts this
relies on), then with bindu-mesh registering one pool of three replicas with every core.

Needs redis-server and PostgreSQL (Debian's, installed by .ci/run): skipped without them on a
developer's machine, failed in CI.
"""
import concurrent.futures
import json
import re
import time

import pytest

from backing import backing  # noqa: F401 - the fixture
from backing import Cores, agent_did, public_key, scale_out_config, schema_name
from harness import Mesh, Replica, a2a_ask, agent_card, agent_config, free_port, http_get, wait_port

MESSAGES = 12
AGENT = "echo-agent"


def start_cores(tmp_path, cleanup, postgres, count=3):
    """`count` cores ready to serve one agent together: the agent's keys made once and copied into
    every core's working directory (one DID, and one signing key too), and the search_path of the
    agent's Postgres schema pinned on the database (Bindu's bug: see `Postgres.pin_search_path`)."""
    cores = Cores(tmp_path / "cores", count)
    cleanup.append(cores)
    cores.share_keys(AGENT)
    postgres.pin_search_path(schema_name(agent_did(agent_config(name=AGENT))))
    return cores.start()


def ask_all(urls, count=MESSAGES):
    """`count` messages of 1 s, all at once, spread over the agent URLs: [(url, state, text)] and
    the seconds it took (printed, not asserted: the machine is shared)."""
    def ask(i):
        url = urls[i % len(urls)]
        state, text = a2a_ask(url, f"sleep:1000 hello {i}", timeout=90)
        return url, state, text

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        results = list(pool.map(ask, range(count)))
    return results, time.monotonic() - started


def max_running(call_log):
    """The most calls running at once, from the replicas' shared call log (`begin`/`end` lines in
    the order they happened: no clock)."""
    running = most = 0
    for line in call_log.read_text().splitlines():
        running += 1 if line.startswith("begin ") else -1
        most = max(most, running)
    return most


def answered_by(text):
    match = re.match(r"\[(r\d+)\] ", text)
    assert match, f"unexpected answer {text!r}"
    return match.group(1)


def check_answers(results):
    for i, (url, state, text) in enumerate(results):
        assert state == "completed", f"message {i} to {url}: {state} {text!r}"
        assert text.endswith(f"hello {i}"), f"message {i} to {url}: {text!r}"


def test_three_cores_share_one_redis_queue_and_one_postgres_storage(tmp_path, cleanup, backing):
    """No mesh: one echo replica registered with each core. The facts the mesh's scale-out relies
    on: the cores agree on the DID, every core's worker takes tasks from the shared queue (a task
    sent to one core may run on another core's handler), results are in the shared storage, and
    the work is spread: 12 tasks of 1 s take about 4 s on three cores, not 12."""
    redis, postgres = backing
    cores = start_cores(tmp_path, cleanup, postgres)
    a2a_ports = [free_port() for _ in cores]
    replicas = []
    for index, (core, a2a_port) in enumerate(zip(cores, a2a_ports), start=1):
        config = scale_out_config(agent_config(name=AGENT, a2a_port=a2a_port), redis, postgres)
        replica = Replica(tmp_path, f"r{index}", core_port=core.port, agent_config=config,
                          extra_args=["--log-calls", "--call-log", str(tmp_path / "calls.log")])
        cleanup.append(replica)
        replicas.append(replica)

    registrations = [r.registration for r in replicas]
    assert all(r["success"] for r in registrations), registrations
    expected_did = agent_did(agent_config(name=AGENT))
    assert {r["did"] for r in registrations} == {expected_did}, "the DID comes from author and name alone"
    assert len({public_key(core, AGENT) for core in cores}) == 1, "the copied keys were used"
    urls = [r["agent_url"] for r in registrations]
    assert urls == [f"http://localhost:{port}" for port in a2a_ports]
    for url in urls:
        card = agent_card(url)
        assert expected_did in [e["uri"] for e in card["capabilities"]["extensions"]]

    results, elapsed = ask_all(urls)
    calls = {r.name: r.calls() for r in replicas}
    cross = sum(1 for url, _, text in results if answered_by(text) != f"r{urls.index(url) + 1}")
    print(f"{MESSAGES} messages in {elapsed:.2f}s; calls per replica {calls}; "
          f"{cross} answered by another core's replica")
    check_answers(results)
    assert sum(calls.values()) == MESSAGES
    assert all(calls.values()), f"every core's worker takes tasks from the shared queue: {calls}"
    assert max_running(tmp_path / "calls.log") >= 2, "the cores ran calls at the same time"

    schema = schema_name(expected_did)
    states = postgres.sql(f'SELECT state, count(*) FROM "{schema}".tasks GROUP BY state', database="bindu")
    assert states == f"completed|{MESSAGES}", states
    for core in cores:
        errors = [line for line in core.process.lines if "does not exist" in line]
        assert not errors, f"core in {core.workdir}: {errors[:3]}"


def admin_pools(mesh):
    wait_port(mesh.admin_port, timeout=30)
    status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/pools")
    assert status == 200, f"/pools answered {status}: {body}"
    return json.loads(body)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def metric_values(text, name):
    """{frozenset of (label, value)}: value, for every sample of a metric."""
    values = {}
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            values[labels] = float(match.group(2))
    return values


def test_mesh_registers_one_pool_with_three_cores_sharing_redis_and_postgres(tmp_path, cleanup, backing):
    """`cores:` lists three cores, each with its own A2A port (`agent_url`); three echo replicas
    register with the mesh with one config carrying the shared Redis and Postgres. The mesh
    registers the pool with every core, and 12 messages of 1 s sent at once over the three cores'
    agent URLs all complete, on every replica, and the replicas' shared call log shows calls
    running at the same time (each core runs one call at a time, so only several cores make them
    overlap)."""
    redis, postgres = backing
    cores = start_cores(tmp_path, cleanup, postgres)
    a2a_ports = [free_port() for _ in cores]
    agent_urls = [f"http://localhost:{port}" for port in a2a_ports]
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, None, cores=[(core.port, url) for core, url in zip(cores, agent_urls)])
    cleanup.append(mesh)
    try:
        mesh.start()
    except (RuntimeError, TimeoutError) as error:
        pytest.fail(f"bindu-mesh did not start ({error}):\n{mesh.process.output()}")

    config = scale_out_config(agent_config(name=AGENT, a2a_port=a2a_ports[0]), redis, postgres)
    replicas = []
    for index in range(1, 4):
        replica = Replica(tmp_path, f"r{index}", core_port=mesh.registry_port, agent_config=config,
                          extra_args=["--log-calls", "--call-log", str(tmp_path / "calls.log")])
        cleanup.append(replica)
        replicas.append(replica)
    expected_did = agent_did(config)
    for replica in replicas:
        assert replica.registration["success"], replica.registration
        assert replica.registration["did"] == expected_did

    core_addresses = [f"127.0.0.1:{core.port}" for core in cores]

    def pool_cores():
        pool = next((p for p in admin_pools(mesh) if p.get("agent") == AGENT), None)
        entries = {entry.get("core"): entry for entry in (pool or {}).get("cores") or []}
        return entries if all(entries.get(a, {}).get("registered") for a in core_addresses) else None

    entries = wait_for(pool_cores, 60)
    if not entries:
        pytest.fail(f"the pool is not registered with every core: /pools {admin_pools(mesh)}\nmesh log:\n"
                    + "\n".join(mesh.process.lines[-40:]))
    assert sorted(entries) == sorted(core_addresses), entries
    for address, url in zip(core_addresses, agent_urls):
        entry = entries[address]
        assert entry["registered"] is True and entry["registrations"] == 1, entry
        assert entry["did"] == expected_did, entry
        assert entry["agent_url"] == url, entry

    results, elapsed = ask_all(agent_urls)
    calls = {r.name: r.calls() for r in replicas}
    most = max_running(tmp_path / "calls.log")
    print(f"{MESSAGES} messages in {elapsed:.2f}s; calls per replica {calls}; at most {most} calls at once")
    check_answers(results)
    assert sum(calls.values()) == MESSAGES
    assert all(calls.values()), f"every replica ran calls: {calls}"
    # Each core runs one call at a time: calls overlap only because several cores call at once.
    assert most >= 2, "the replicas never ran calls at the same time"

    status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")
    assert status == 200
    registered = metric_values(body, "bindu_mesh_core_registered")
    for address in core_addresses:
        assert registered.get(frozenset({("core", address), ("pool", AGENT)})) == 1, registered
