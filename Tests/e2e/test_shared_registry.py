"""Several meshes sharing one replica registry in PostgreSQL (`registry.postgres_url`).

Three "hosts" on this machine's loopback, each a real Bindu core and a mesh that registers the
pool with that core alone; the cores share Bindu's Redis scheduler and Postgres storage, and the
meshes share their registry in a database of its own on the same PostgreSQL server. Replicas
register at different meshes; every mesh serves every replica.

Needs redis-server and PostgreSQL (Debian's, installed by .ci/run): skipped without them on a
developer's machine, failed in CI.
"""
import re
import time

import grpc
import pytest

from backing import DB_NAME, DB_PASSWORD, DB_USER, Postgres, Redis, require_backing, scale_out_config
from harness import Mesh, MessageFlow, Replica, a2a_ask, agent_config, free_port, http_get, wait_until
from test_scale_out import AGENT, start_cores

REPLICA_TIMEOUT = "6s"


@pytest.fixture
def backing(cleanup):
    require_backing()
    redis = Redis()
    cleanup.append(redis)
    postgres = Postgres()
    cleanup.append(postgres)
    redis.start(), postgres.start()
    postgres.sql(f"CREATE DATABASE mesh_registry OWNER {DB_USER}")
    return redis, postgres


def registry_url(postgres) -> str:
    return f"postgres://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/mesh_registry?sslmode=disable"


def shared_mesh(tmp_path, cleanup, name, postgres, core=None, agent_url=None):
    """A mesh named `name` on the shared registry, registering with `core` (or with a core that is
    not there)."""
    workdir = tmp_path / f"mesh-{name}"
    workdir.mkdir()
    cores = [(core.port, agent_url)] if core else [(free_port(), None)]
    mesh = Mesh(workdir, None, cores=cores,
                registry_yaml=f"  postgres_url: {registry_url(postgres)}\n  mesh_id: {name}\n"
                              f"  replica_timeout: {REPLICA_TIMEOUT}\n",
                extra_yaml="health:\n  interval: 1s\n")
    cleanup.append(mesh)
    try:
        mesh.start()
    except (RuntimeError, TimeoutError) as error:
        pytest.fail(f"mesh {name} did not start ({error})")
    return mesh


def members(mesh) -> dict:
    """{membership id: endpoint} of the agent's pool."""
    pool = next((p for p in mesh.pools() if p["agent"] == AGENT), None)
    return {e["member"]: e for e in (pool or {}).get("endpoints", []) if e.get("member")}


def serving(mesh, ids) -> bool:
    found = members(mesh)
    return all(i in found and found[i]["in_rotation"] for i in ids)


def status(mesh) -> dict:
    import json
    code, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/status")
    assert code == 200, body
    return json.loads(body)


def answered_by(text) -> str:
    match = re.match(r"\[(r\d+)\] ", text)
    assert match, f"unexpected answer {text!r}"
    return match.group(1)


def test_three_meshes_serve_every_replica_and_survive_the_loss_of_one_host(tmp_path, cleanup, backing):
    redis, postgres = backing
    cores = start_cores(tmp_path, cleanup, postgres)
    a2a_ports = [free_port() for _ in cores]
    urls = [f"http://localhost:{port}" for port in a2a_ports]
    meshes = {name: shared_mesh(tmp_path, cleanup, name, postgres, core, url)
              for name, core, url in zip("abc", cores, urls)}
    config = scale_out_config(agent_config(name=AGENT, a2a_port=a2a_ports[0]), redis, postgres)
    # r1 and r2 register at mesh A, r3 at mesh B.
    at = {"r1": "a", "r2": "a", "r3": "b"}
    replicas = {}
    for name, mesh in at.items():
        replica = Replica(tmp_path, name, core_port=meshes[mesh].registry_port, agent_config=config,
                          extra_args=["--log-calls"])
        cleanup.append(replica)
        assert replica.registration["success"], replica.registration
        replicas[name] = replica
    ids = {name: r.registration["agent_id"] for name, r in replicas.items()}
    for name, mesh in meshes.items():
        wait_until(lambda m=mesh: serving(m, ids.values()), 20, f"every replica in rotation at mesh {name}")
        assert len(members(mesh)) == 3, members(mesh)
        shared = status(mesh)["shared_registry"]
        assert shared["up"] and shared["mesh_id"] == name and shared["pending_writes"] == 0, shared

    # A2A messages through every core: answered by replicas registered at both meshes.
    seen = set()
    for i in range(30):
        state, text = a2a_ask(urls[i % 3], f"hello {i}", timeout=60)
        assert state == "completed" and text.endswith(f"hello {i}"), (state, text)
        seen.add(answered_by(text))
        if seen == set(at) and i >= 5:
            break
    assert seen == set(at), f"answered by {seen}"

    # Host A dies (its mesh and its core) under load on cores B and C.
    flows = [MessageFlow(url, threads=1, sleep_ms=100, timeout=45) for url in urls[1:]]
    try:
        for flow in flows:
            flow.wait_completed(3)
        meshes["a"].kill()
        cores[0].stop()
        killed = time.monotonic()
        for flow in flows:
            flow.wait_completed(4, after=killed + 1, timeout=60)
        # Past the replica timeout: r1 and r2 heartbeat to the dead mesh A, and B and C keep them
        # by their probes (theirs and each other's sightings).
        time.sleep(8)
        for name in "bc":
            assert serving(meshes[name], ids.values()), f"mesh {name}: {members(meshes[name])}"
        after_wait = time.monotonic()
        for flow in flows:
            flow.wait_completed(3, after=after_wait, timeout=60)
    finally:
        for flow in flows:
            flow.stop()
    outcomes = [o for flow in flows for o in flow.outcomes]
    failed = [o for o in outcomes if o.state != "completed"]
    print(f"host A killed: {len(outcomes)} messages through cores B and C, {len(failed)} not completed: {failed}")
    # Core A's worker may have popped one task from the shared queue when it died (Bindu leaves it
    # `working`): nothing else is lost.
    assert len(failed) <= 1, failed
    answered = {answered_by(o.text) for o in outcomes if o.state == "completed" and o.done > killed}
    assert {"r1", "r2"} & answered, f"replicas registered at mesh A answered after it died: {answered}"

    # r3 unregisters at mesh B: mesh C stops using it within 2 s.
    import agent_handler_pb2 as messages
    import agent_handler_pb2_grpc as services
    registry = services.BinduServiceStub(grpc.insecure_channel(f"127.0.0.1:{meshes['b'].registry_port}"))
    left = registry.UnregisterAgent(messages.UnregisterAgentRequest(agent_id=ids["r3"]), timeout=10)
    assert left.success, left
    unregistered = time.monotonic()
    wait_until(lambda: ids["r3"] not in members(meshes["c"]), 2, "r3 gone from mesh C")
    print(f"r3 left mesh C {time.monotonic() - unregistered:.2f}s after unregistering at mesh B")

    # A mesh started with an empty state folder serves every registered replica.
    fresh = shared_mesh(tmp_path, cleanup, "d", postgres)
    wait_until(lambda: serving(fresh, [ids["r1"], ids["r2"]]), 20, "mesh D serves r1 and r2")
    assert set(members(fresh)) == {ids["r1"], ids["r2"]}, members(fresh)
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{fresh.pool_port(AGENT)}"))
    answers = {stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content=f"d {i}")]),
                                   timeout=10).content.split("]")[0] for i in range(6)}
    assert answers == {"[r1", "[r2"}, answers


def test_the_registry_rides_out_a_database_outage(tmp_path, cleanup, core):
    """The shared database stopped for 30 s under calls: no call fails, no replica is evicted, and
    a registration taken meanwhile reaches the other mesh once the database is back."""
    require_backing()
    postgres = Postgres()
    cleanup.append(postgres)
    postgres.start()
    postgres.sql(f"CREATE DATABASE mesh_registry OWNER {DB_USER}")
    a2a_port = free_port()
    mesh_a = shared_mesh(tmp_path, cleanup, "a", postgres, core, f"http://localhost:{a2a_port}")
    mesh_b = shared_mesh(tmp_path, cleanup, "b", postgres)
    config = agent_config(name=AGENT, a2a_port=a2a_port)
    r1 = Replica(tmp_path, "r1", core_port=mesh_a.registry_port, agent_config=config)
    cleanup.append(r1)
    first = r1.registration["agent_id"]
    wait_until(lambda: serving(mesh_b, [first]), 20, "r1 in rotation at mesh B")

    import agent_handler_pb2 as messages
    import agent_handler_pb2_grpc as services
    stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{mesh_b.pool_port(AGENT)}"))

    def call(text):
        return stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content=text)]), timeout=10)

    postgres.pause()
    paused = time.monotonic()
    wait_until(lambda: not status(mesh_b)["shared_registry"]["up"], 20, "mesh B sees the database down")
    r2 = Replica(tmp_path, "r2", core_port=mesh_a.registry_port, agent_config=config)
    cleanup.append(r2)
    second = r2.registration["agent_id"]
    assert status(mesh_a)["shared_registry"]["pending_writes"] > 0
    calls = 0
    while time.monotonic() - paused < 30:
        assert call(f"outage {calls}").content.endswith(f"outage {calls}")
        calls += 1
        time.sleep(0.1)
    for mesh in (mesh_a, mesh_b):
        assert first in members(mesh), f"r1 evicted during the outage: {members(mesh)}"
    # Mesh A (its core is there) stays ready without its database.
    assert http_get(f"http://127.0.0.1:{mesh_a.admin_port}/readyz")[0] == 200
    _, metrics = http_get(f"http://127.0.0.1:{mesh_a.admin_port}/metrics")
    assert re.search(r"^bindu_mesh_registry_store_up 0(\.0)?$", metrics, re.M), "the store's state is shown"
    _, page = http_get(f"http://127.0.0.1:{mesh_a.admin_port}/")
    assert re.search(r'id="shared-registry" class="bad">[^<]* as a: down · last read [^<]* · [1-9][0-9]* writes pending', page), page
    postgres.resume()
    wait_until(lambda: serving(mesh_b, [first, second]), 30, "r2, taken during the outage, at mesh B")
    assert status(mesh_a)["shared_registry"]["pending_writes"] == 0
    print(f"{calls} calls through mesh B during the outage, none failed")


def test_a_database_that_refuses_the_mesh_stops_its_start_with_file_line_and_key(tmp_path, cleanup):
    require_backing()
    postgres = Postgres()
    cleanup.append(postgres)
    postgres.start()
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    url = f"postgres://nobody:wrong@127.0.0.1:{postgres.port}/mesh_registry?sslmode=disable"
    mesh = Mesh(workdir, free_port(), registry_yaml=f"  postgres_url: {url}\n")
    cleanup.append(mesh)
    process = mesh.launch()
    assert process.proc.wait(30) != 0
    output = process.output()
    line = next((l for l in output.splitlines() if "registry.postgres_url" in l), None)
    assert line, output
    assert re.search(r"bindu-mesh\.yaml:\d+:\d+: registry\.postgres_url: ", line), line
    assert 'role "nobody" does not exist' in line and "wrong" not in line, line
