"""Shared registry: how fast a registration reaches the other meshes, and how fast a core goes on
when another host dies.

Three "hosts" on this machine's loopback, each a Bindu core and a mesh that registers the pool with
that core alone; the cores share one Redis and one PostgreSQL (Tests/e2e/backing.py), the meshes
share their registry in a database of its own on that PostgreSQL (`registry.postgres_url`).

- **Propagation.** An echo replica serves alone; `RegisterAgent` with its address at mesh A, then
  `UnregisterAgent` at mesh A, N times. From each answer, the time until the membership id is in
  (then gone from) mesh B's and mesh C's `/pools`, polled back to back. Printed: p50, p99 and max.
- **Failover.** Three echo replicas registered at mesh A; A2A messages of `sleep:S` back to back
  through core B (two at a time). Mesh A and core A are SIGKILLed: the time from the kill to the
  first completed message through core B that was sent after it, and the messages through B that
  failed. Then host A starts again (its state folder, its core) and serves the replicas before the
  next repetition.

Run alone: .venv/bin/python Benchmarks/shared_registry.py --bin-dir .build/release
"""
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
import harness  # noqa: E402
from backing import DB_PASSWORD, DB_USER, Cores, Postgres, Redis, agent_did, scale_out_config, schema_name  # noqa: E402
from harness import Mesh, MessageFlow, Replica, agent_config, free_port, http_get, stop_all, wait_port, wait_until  # noqa: E402
from scale_out import AGENT, missing_backing  # noqa: E402


def add_arguments(parser):
    group = parser.add_argument_group("shared registry (part 'registry')")
    group.add_argument("--registry-rounds", type=int, default=40, help="registrations (and removals) timed")
    group.add_argument("--registry-failovers", type=int, default=3, help="times host A is killed")
    group.add_argument("--registry-sleep-ms", type=int, default=200, help="handler time of each message")


def members(mesh) -> set:
    status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/pools", timeout=5)
    if status != 200:
        return set()
    pool = next((p for p in json.loads(body) if p.get("agent") == AGENT), None)
    return {e["member"] for e in (pool or {}).get("endpoints", []) if e.get("member")}


def in_rotation(mesh) -> int:
    status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/pools", timeout=5)
    pool = next((p for p in json.loads(body) if p.get("agent") == AGENT), None) if status == 200 else None
    return sum(1 for e in (pool or {}).get("endpoints", []) if e.get("in_rotation"))


def seen_after(mesh, member, present, timeout=30.0) -> float:
    """Seconds (time.monotonic()) at which `member` is first seen in (or gone from) `mesh`'s pool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (member in members(mesh)) == present:
            return time.monotonic()
    raise TimeoutError(f"member {member} not {'in' if present else 'gone from'} a mesh's pool in {timeout}s")


def timed_at_both(others, member, present, started):
    """The time from `started` until each mesh of `others` shows the change, polled in parallel."""
    times = [None] * len(others)

    def watch(index):
        times[index] = seen_after(others[index], member, present) - started

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(len(others))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(t is None for t in times):
        raise RuntimeError("a mesh did not show the change")
    return times


def propagation(args, meshes, config, root):
    """(registration times, removal times), one per mesh B and C per round, in seconds."""
    import grpc
    from bindu.grpc.generated import agent_handler_pb2 as pb
    from bindu.grpc.generated import agent_handler_pb2_grpc as services
    replica = Replica(root, "probe")
    try:
        stub = services.BinduServiceStub(grpc.insecure_channel(f"127.0.0.1:{meshes[0].registry_port}"))
        added, removed = [], []
        for _ in range(args.registry_rounds):
            started = time.monotonic()
            answer = stub.RegisterAgent(pb.RegisterAgentRequest(
                config_json=json.dumps(config), grpc_callback_address=f"127.0.0.1:{replica.port}"), timeout=30)
            if not answer.success:
                raise RuntimeError(f"registration refused: {answer.error}")
            added += timed_at_both(meshes[1:], answer.agent_id, True, started)
            started = time.monotonic()
            gone = stub.UnregisterAgent(pb.UnregisterAgentRequest(agent_id=answer.agent_id), timeout=30)
            if not gone.success:
                raise RuntimeError(f"unregistration refused: {gone.error}")
            removed += timed_at_both(meshes[1:], answer.agent_id, False, started)
        return added, removed
    finally:
        replica.stop()


def failover(args, cores, meshes, urls, count):
    """One kill of host A under load through core B: (seconds to the first message completed after
    the kill, messages through B that failed after it)."""
    flow = MessageFlow(urls[1], threads=2, sleep_ms=args.registry_sleep_ms, timeout=60)
    try:
        flow.wait_completed(4, timeout=90)
        meshes[0].kill()
        cores[0].stop()
        killed = time.monotonic()
        wait_until(lambda: [o for o in flow.completed(killed) if o.sent > killed], 60,
                   "a message through core B completed after the kill")
        time.sleep(1.0)
    finally:
        flow.stop()
    first = min(o.done for o in flow.completed(killed) if o.sent > killed) - killed
    failed = [f"{o.state}: {o.text[:120]}" for o in flow.outcomes if o.done > killed and o.state != "completed"]
    # Host A again, serving the replicas, before the next repetition.
    cores[0].start()
    meshes[0].start()
    wait_until(lambda: in_rotation(meshes[0]) >= count, 60, "mesh A serves the replicas again")
    return first, failed


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run(args, bin_dir):
    missing = missing_backing()
    if missing:
        print(f"\nshared registry: skipped: {missing}")
        return
    harness.BIN_DIR = bin_dir
    root = Path(tempfile.mkdtemp(prefix="bindu-mesh-shared-registry-"))
    redis, postgres = Redis(), Postgres()
    stop = [redis, postgres]
    try:
        redis.start()
        postgres.start()
        postgres.sql(f"CREATE DATABASE mesh_registry OWNER {DB_USER}")
        postgres.pin_search_path(schema_name(agent_did(agent_config(name=AGENT))))
        cores = Cores(root, 3)
        stop.append(cores)
        cores.share_keys(AGENT)
        cores.start()
        urls = [f"http://localhost:{free_port()}" for _ in range(3)]
        url = f"postgres://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/mesh_registry?sslmode=disable"
        meshes = []
        for name, core, agent_url in zip("abc", cores, urls):
            (root / f"mesh-{name}").mkdir()
            mesh = Mesh(root / f"mesh-{name}", None, cores=[(core.port, agent_url)],
                        registry_yaml=f"  postgres_url: {url}\n  mesh_id: {name}\n",
                        extra_yaml="health:\n  interval: 1s\n")
            stop.append(mesh)
            mesh.start()
            meshes.append(mesh)
        config = scale_out_config(agent_config(name=AGENT, a2a_port=int(urls[0].rsplit(":", 1)[1])), redis, postgres)
        replicas = [Replica(root, f"r{i}", core_port=meshes[0].registry_port, agent_config=config) for i in (1, 2, 3)]
        stop.extend(replicas)
        for mesh in meshes:
            wait_until(lambda m=mesh: in_rotation(m) >= len(replicas), 60, "every mesh serves the replicas")
        for agent_url in urls:
            wait_port(int(agent_url.rsplit(":", 1)[1]), timeout=60)
        added, removed = propagation(args, meshes, config, root)
        outcomes = [failover(args, cores, meshes, urls, len(replicas)) for _ in range(args.registry_failovers)]
    finally:
        stop_all(stop)
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nshared registry: 3 meshes and 3 Bindu cores on loopback, one PostgreSQL; {time.strftime('%Y-%m-%d')}")
    print(f"{'propagation to the 2 other meshes':<36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  samples")
    for name, values in (("RegisterAgent at mesh A", added), ("UnregisterAgent at mesh A", removed)):
        print(f"{name:<36} {percentile(values, 0.5) * 1e3:>8.1f} {percentile(values, 0.99) * 1e3:>8.1f} "
              f"{max(values) * 1e3:>8.1f}  {len(values)}")
    firsts = [first for first, _ in outcomes]
    print(f"failover, mesh and core of host A killed under load through core B ({args.registry_sleep_ms} ms messages): "
          f"first message completed after the kill {statistics.median(firsts):.2f} s median "
          f"({min(firsts):.2f}-{max(firsts):.2f}, {len(firsts)} kills); failed through core B: "
          f"{sum(len(failed) for _, failed in outcomes)}")
    for failed in sorted({f for _, fails in outcomes for f in fails}):
        print(f"  not completed: {failed}")


if __name__ == "__main__":
    from standalone import run_part
    run_part(__doc__, add_arguments, run)
