"""Several meshes sharing one replica registry in PostgreSQL (`registry.postgres_url`).

Three hosts in network namespaces (netns.py), each a real Bindu core and a mesh that registers
the pool with that core alone, and a fourth running Redis and PostgreSQL: the cores share Bindu's
Redis scheduler and Postgres storage, and the meshes share their registry in a database of its
own on the same PostgreSQL server. Replicas register at different meshes; every mesh serves every
replica. The database's outage and refusal are tests of one machine's loopback.

Needs redis-server and PostgreSQL (Debian's, installed by .ci/run): skipped without them on a
developer's machine, failed in CI.
"""
import concurrent.futures
import re
import signal
import time
from types import SimpleNamespace

import grpc
import pytest

from backing import (DB_PASSWORD, DB_USER, Postgres, Redis, agent_did, make_keys, require_backing, scale_out_config,
                     schema_name, share_keys)
from harness import Mesh, MessageFlow, Replica, a2a_ask, agent_config, free_port, http_get, wait_until
from netns import call_in, network  # noqa: F401 - the fixture
from test_multi_host import ADMIN, URL, HostMesh, SdkReplica, start_core
from test_scale_out import AGENT

REPLICA_TIMEOUT = "6s"


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


def host_mesh(host, tmp_path, postgres, core=True) -> HostMesh:
    """A mesh on `host`, registering with the host's core (or, `core=False`, with one that is not
    there), on the registry in host DB's PostgreSQL; its registry open to the network, and this
    host's replicas recorded at the host's name."""
    config = (f"core:\n  address: 127.0.0.1:{3774 if core else 3799}\n  heartbeat_interval: 1s\n"
              "  retry_max_backoff: 1s\n"
              "registry:\n  listen: 0.0.0.0:3775\n"
              f"  postgres_url: postgres://{DB_USER}:{DB_PASSWORD}@host-db.internal:{postgres.port}/mesh_registry"
              "?sslmode=disable\n"
              f"  mesh_id: {host.name}\n  advertise_host: host-{host.name}.internal\n"
              f"  replica_timeout: {REPLICA_TIMEOUT}\n"
              "health:\n  interval: 1s\n")
    return HostMesh(host, tmp_path / f"mesh-{host.name}", config).start()


def host_cores(hosts, tmp_path, postgres):
    """A core on each host (`bindu serve --grpc` on its loopback), all with the agent's one key pair."""
    workdirs = [tmp_path / f"core-{host.name}" for host in hosts]
    first = SimpleNamespace(workdir=workdirs[0])
    make_keys(first, AGENT)
    share_keys(first, [first, *(SimpleNamespace(workdir=w) for w in workdirs[1:])], AGENT)
    postgres.pin_search_path(schema_name(agent_did(agent_config(name=AGENT))))
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        return list(pool.map(lambda pair: start_core(*pair, exist_ok=True), zip(hosts, workdirs)))


def test_three_hosts_share_one_registry_and_survive_the_loss_of_one(network, tmp_path, cleanup):
    """Hosts A, B and C each run a core and a mesh; host DB runs Redis and PostgreSQL. r1 and r2
    run on host A and register with mesh A over loopback (recorded at host-a.internal); r3 runs on
    host B and registers with mesh B by its name (recorded at its address)."""
    require_backing()
    db = network.host("db")
    hosts = {name: network.host(name) for name in "abc"}
    redis, postgres = Redis(db), Postgres(db)
    cleanup.extend([redis, postgres])
    redis.start(), postgres.start()
    postgres.sql(f"CREATE DATABASE mesh_registry OWNER {DB_USER}")
    cores = host_cores(list(hosts.values()), tmp_path, postgres)
    meshes = {name: host_mesh(host, tmp_path, postgres) for name, host in hosts.items()}
    config = scale_out_config(agent_config(name=AGENT, a2a_port=3773), redis, postgres)
    at = {"r1": ("a", "127.0.0.1:3775"), "r2": ("a", "127.0.0.1:3775"), "r3": ("b", "host-b.internal:3775")}
    replicas = {name: SdkReplica(hosts[h], tmp_path, name, core, config=config) for name, (h, core) in at.items()}
    ids = {}
    for name, replica in replicas.items():
        registration = replica.registration()
        assert registration["success"], (name, registration, meshes[at[name][0]].log()[-3000:])
        ids[name] = registration["agent_id"]
    addresses = {"r1": f"host-a.internal:{replicas['r1'].port}", "r2": f"host-a.internal:{replicas['r2'].port}",
                 "r3": f"{hosts['b'].address}:{replicas['r3'].port}"}
    for name, mesh in meshes.items():
        wait_until(lambda m=mesh: serving(m, ids.values()), 30, f"every replica in rotation at mesh {name}")
        found = members(mesh)
        assert {found[ids[r]]["address"] for r in ids} == set(addresses.values()), found
        shared = mesh.host.get_json(f"{ADMIN}/status")["shared_registry"]
        assert shared["up"] and shared["mesh_id"] == name and shared["pending_writes"] == 0, shared

    # A2A messages through every core: answered by replicas of both hosts.
    seen = set()
    for i in range(30):
        host = hosts["abc"[i % 3]]
        state, text = host.run(a2a_ask, URL, f"hello {i}", timeout=60)
        assert state == "completed" and text.endswith(f"hello {i}"), (state, text)
        seen.add(answered_by(text))
        if seen == set(at) and i >= 5:
            break
    assert seen == set(at), f"answered by {seen}"

    # Everything of host A but its replicas (its mesh and its core) SIGKILLed under load on B and C.
    flows = [hosts[h].run(MessageFlow, URL, threads=1, sleep_ms=100, timeout=45) for h in "bc"]
    try:
        for flow in flows:
            flow.wait_completed(3)
        meshes["a"].kill()
        cores[0].stop(signal.SIGKILL)
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

    # r1 heartbeats at mesh C, which it never registered with: acknowledged.
    beat = call_in(hosts["c"], "--target", "127.0.0.1:3775", "--heartbeat", ids["r1"])
    assert beat["acknowledged"], beat

    # r3 unregisters at mesh B: mesh C stops using it within 2 s.
    left = call_in(hosts["b"], "--target", "127.0.0.1:3775", "--unregister", ids["r3"])
    assert left["success"], left
    unregistered = time.monotonic()
    wait_until(lambda: ids["r3"] not in members(meshes["c"]), 2, "r3 gone from mesh C")
    print(f"r3 left mesh C {time.monotonic() - unregistered:.2f}s after unregistering at mesh B")

    # A mesh started with an empty state folder, on a host of its own, serves r1 and r2.
    fresh = host_mesh(network.host("d"), tmp_path, postgres, core=False)
    wait_until(lambda: serving(fresh, [ids["r1"], ids["r2"]]), 20, "mesh D serves r1 and r2")
    assert set(members(fresh)) == {ids["r1"], ids["r2"]}, members(fresh)
    listen = next(p for p in fresh.pools() if p["agent"] == AGENT)["callback_listen"]
    answers = call_in(fresh.host, "--target", listen, *[a for i in range(6) for a in ("--text", f"d {i}")])
    assert {answer.split("]")[0] for answer in answers} == {"[r1", "[r2"}, answers


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
