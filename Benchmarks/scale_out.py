"""Scale-out: A2A throughput through bindu-mesh with 1, 2 and 3 Bindu cores.

The cores (`bindu serve --grpc`, fresh ones for each count, one DID and one key pair) share one
Redis scheduler queue and one PostgreSQL storage (Tests/e2e/backing.py); bindu-mesh registers one
pool with every core (`cores:`, each with its own A2A port), and echo replicas register with the
mesh with an agent config naming the shared Redis and Postgres. After one warm-up message per
core, N messages of 1 s (`sleep:1000 hello i`) are sent at once, spread over the cores' agent
URLs; a message counts when `tasks/get` shows it completed. Prints messages/s for each core count
and the ratio to one core (a core runs one task at a time, so one core is about 1 message/s).

Run alone: .venv/bin/python Benchmarks/scale_out.py --bin-dir .build/release [--scale-messages N]
"""
import collections
import concurrent.futures
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
import backing  # noqa: E402
import harness  # noqa: E402
from backing import Cores, Postgres, Redis, agent_did, scale_out_config, schema_name  # noqa: E402
from harness import Mesh, Replica, a2a_rpc, agent_config, free_port, http_get, stop_all, wait_port  # noqa: E402

AGENT = "echo-agent"
TERMINAL = ("completed", "failed", "canceled", "rejected", "input-required", "auth-required")


def add_arguments(parser):
    group = parser.add_argument_group("scale-out (part 'scaleout')")
    group.add_argument("--scale-cores", default="1,2,3", help="core counts to run")
    group.add_argument("--scale-messages", type=int, default=24, help="messages per run, all sent at once")
    group.add_argument("--scale-replicas", type=int, default=3, help="echo replicas registered with the mesh")
    group.add_argument("--scale-sleep-ms", type=int, default=1000, help="handler time of each message")


def missing_backing():
    """What is missing to run Redis and PostgreSQL here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: redis-server)"
    if backing.postgres_bin_dir() is None:
        return "PostgreSQL is not installed (Debian: postgresql)"
    return None


def ask(url, text, timeout=120.0, poll=0.25):
    """`message/send`, then `tasks/get` every `poll` s until a terminal state: (state, text, seconds)."""
    started = time.monotonic()
    params = {"message": {"role": "user", "parts": [{"kind": "text", "text": text}], "kind": "message",
                          "messageId": str(uuid.uuid4()), "contextId": str(uuid.uuid4()), "taskId": str(uuid.uuid4())},
              "configuration": {"acceptedOutputModes": ["application/json"]}}
    try:
        task_id = a2a_rpc(url, "message/send", params)["result"]["id"]
        while time.monotonic() - started < timeout:
            task = a2a_rpc(url, "tasks/get", {"taskId": task_id})["result"]
            state = task["status"]["state"]
            if state in TERMINAL:
                texts = [p.get("text", "") for a in task.get("artifacts") or [] for p in a.get("parts", [])]
                return state, " ".join(texts), time.monotonic() - started
            time.sleep(poll)
        return "timeout", "", time.monotonic() - started
    except Exception as error:  # noqa: BLE001 - an outcome like any other
        return "error", f"{type(error).__name__}: {error}", time.monotonic() - started


def pool_registered(mesh, addresses):
    """True once /pools shows the pool registered with every core."""
    status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/pools")
    if status != 200:
        return False
    pool = next((p for p in json.loads(body) if p.get("agent") == AGENT), None)
    entries = {entry.get("core"): entry for entry in (pool or {}).get("cores") or []}
    return all(entries.get(a, {}).get("registered") for a in addresses)


def run_count(count, args, redis, postgres, workdir):
    """One run with `count` cores; a dict of what was measured."""
    root = workdir / f"cores-{count}"
    stop = []
    try:
        cores = Cores(root, count)
        stop.append(cores)
        cores.share_keys(AGENT)
        cores.start()
        urls = [f"http://localhost:{free_port()}" for _ in range(count)]
        (root / "mesh").mkdir()
        mesh = Mesh(root / "mesh", None, cores=[(core.port, url) for core, url in zip(cores, urls)])
        stop.append(mesh)
        mesh.start()
        config = scale_out_config(agent_config(name=AGENT, a2a_port=int(urls[0].rsplit(":", 1)[1])), redis, postgres)
        replicas = []
        for index in range(1, args.scale_replicas + 1):
            replicas.append(Replica(root, f"r{index}", core_port=mesh.registry_port, agent_config=config,
                                    extra_args=["--log-calls"]))
            stop.append(replicas[-1])
        addresses = [f"127.0.0.1:{core.port}" for core in cores]
        deadline = time.monotonic() + 90
        while not pool_registered(mesh, addresses):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} cores: the pool is not registered with every core; mesh log:\n"
                                   + "\n".join(mesh.process.lines[-30:]))
            time.sleep(0.3)
        for url in urls:
            wait_port(int(url.rsplit(":", 1)[1]), timeout=60)
        with concurrent.futures.ThreadPoolExecutor(count) as pool:  # warm-up: one message per core
            warm = list(pool.map(lambda u: ask(u, "warm-up"), urls))
        if any(state != "completed" for state, _, _ in warm):
            raise RuntimeError(f"{count} cores: warm-up failed: {warm}")
        before = {r.name: r.calls() for r in replicas}

        def send(i):
            return ask(urls[i % count], f"sleep:{args.scale_sleep_ms} hello {i}")

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.scale_messages) as pool:
            outcomes = list(pool.map(send, range(args.scale_messages)))
        elapsed = time.monotonic() - started
        states = collections.Counter(state for state, _, _ in outcomes)
        wrong = [text for i, (state, text, _) in enumerate(outcomes) if state == "completed" and not text.endswith(f"hello {i}")]
        return {"cores": count, "seconds": elapsed, "completed": states.get("completed", 0), "states": dict(states),
                "wrong": len(wrong), "calls": {r.name: r.calls() - before[r.name] for r in replicas},
                "slowest": max(seconds for _, _, seconds in outcomes)}
    finally:
        stop_all(stop)


def run(args, bin_dir):
    missing = missing_backing()
    if missing:
        print(f"\nscale-out: skipped: {missing}")
        return
    harness.BIN_DIR = bin_dir  # Mesh and Replica start the binaries of this directory
    counts = [int(c) for c in args.scale_cores.split(",") if c.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="bindu-mesh-scale-out-"))
    redis, postgres = Redis(), Postgres()
    results = []
    try:
        redis.start()
        postgres.start()
        postgres.pin_search_path(schema_name(agent_did(agent_config(name=AGENT))))
        for count in counts:
            result = run_count(count, args, redis, postgres, workdir)
            results.append(result)
            print(f"  {count} core(s): {result['completed']}/{args.scale_messages} completed in {result['seconds']:.2f} s; "
                  f"calls per replica {result['calls']}", flush=True)
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nscale-out: {args.scale_messages} A2A messages of {args.scale_sleep_ms} ms sent at once through bindu-mesh "
          f"({args.scale_replicas} echo replicas), Bindu cores sharing Redis + PostgreSQL")
    print(f"{'cores':>5} {'completed':>10} {'seconds':>8} {'messages/s':>11} {'ratio to 1 core':>16}  calls per replica")
    base = next((r for r in results if r["cores"] == 1), None)
    for r in results:
        rate = r["completed"] / r["seconds"]
        ratio = f"{rate / (base['completed'] / base['seconds']):.2f}" if base else "-"
        notes = "" if r["completed"] == args.scale_messages and not r["wrong"] else f"  states {r['states']}, wrong answers {r['wrong']}"
        print(f"{r['cores']:>5} {r['completed']:>10} {r['seconds']:>8.2f} {rate:>11.2f} {ratio:>16}  "
              f"{'/'.join(str(v) for v in r['calls'].values())}{notes}")


if __name__ == "__main__":
    from standalone import run_part
    run_part(__doc__, add_arguments, run)
