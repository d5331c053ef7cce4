"""Agent-shaped load: the load the balancer exists for.

Three replicas of an agent (Benchmarks/agent_replica.py: at most 4 calls at once, more wait in the
replica in arrival order; handler times lognormal, median 100 ms, sigma 0.5; one replica 3x
slower), an open-loop load of Poisson arrivals at a fraction (70 %) of the replicas' total
capacity (sum of 4 / mean handler time), unary HandleMessages with a 30 s deadline, latency
counted from each call's scheduled time. The same seeded schedule (arrival times and job sizes)
runs through every configuration, interleaved across repetitions: bindu-mesh least_request,
round_robin, least_request with a per-replica limit (`max_concurrent_calls: 4`, reported as not
supported when the build refuses the key), HAProxy leastconn and roundrobin (h2c both sides).

Run alone: .venv/bin/python Benchmarks/agent_load.py --bin-dir .build/release [--agent-duration S]
"""
import asyncio
import collections
import json
import math
import random
import re
import signal
import subprocess
import sys
import tempfile
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
import conftest  # noqa: E402  (generates the contract's Python stubs)
from harness import Process, free_port, http_get, wait_port  # noqa: E402

AGENT = "bench-agent"
CONCURRENCY, MEDIAN_MS, SIGMA = 4, 100.0, 0.5
REPLICAS = (("fast1", 1.0), ("fast2", 1.0), ("slow", 3.0))  # name, slowdown
DEADLINE = 30.0
CONFIGS = {  # name -> (kind, balancer YAML or HAProxy balance)
    "mesh-least-request": ("mesh", "{policy: least_request}"),
    "mesh-round-robin": ("mesh", "{policy: round_robin}"),
    "mesh-least-request-limit4": ("mesh", f"{{policy: least_request, max_concurrent_calls: {CONCURRENCY}}}"),
    "haproxy-leastconn": ("haproxy", "leastconn"),
    "haproxy-roundrobin": ("haproxy", "roundrobin"),
    "haproxy-leastconn-maxconn4": ("haproxy", "leastconn maxconn"),  # opt-in (--agent-configs)
}
DEFAULT_CONFIGS = list(CONFIGS)[:5]
BASELINE = "haproxy-leastconn"


def add_arguments(parser):
    group = parser.add_argument_group("agent-shaped load (part 'agent')")
    group.add_argument("--agent-duration", type=float, default=20.0, help="seconds of arrivals per run")
    group.add_argument("--agent-repetitions", type=int, default=1)
    group.add_argument("--agent-load", type=float, default=0.7, help="offered load, fraction of total capacity")
    group.add_argument("--agent-seed", type=int, default=1)
    group.add_argument("--agent-configs", default=",".join(DEFAULT_CONFIGS),
                       help=f"comma-separated, of: {', '.join(CONFIGS)}; a mesh one may end in @BIN_DIR, another build's")


def capacity():
    """Calls per second the three replicas can serve: sum of concurrency / mean handler time."""
    mean_s = MEDIAN_MS * math.exp(SIGMA ** 2 / 2) / 1000.0
    return sum(CONCURRENCY / (mean_s * slowdown) for _, slowdown in REPLICAS)


def make_schedule(rate, duration, seed):
    """[(seconds from the start, base handler ms)]: Poisson arrivals, lognormal job sizes."""
    rng = random.Random(seed)
    schedule, t = [], rng.expovariate(rate)
    while t < duration:
        schedule.append((t, round(rng.lognormvariate(0.0, SIGMA) * MEDIAN_MS, 3)))
        t += rng.expovariate(rate)
    return schedule


def stubs():
    import agent_handler_pb2
    import agent_handler_pb2_grpc
    return agent_handler_pb2, agent_handler_pb2_grpc


def start_replicas(workdir, seed):
    replicas = []
    for name, slowdown in REPLICAS:
        process = Process([sys.executable, str(ROOT / "Benchmarks" / "agent_replica.py"), "--name", name,
                           "--concurrency", str(CONCURRENCY), "--median-ms", str(MEDIAN_MS), "--sigma", str(SIGMA),
                           "--slowdown", str(slowdown), "--seed", str(seed), "--stubs", str(conftest._stub_dir)],
                          cwd=workdir, name=name)
        port = int(process.wait_line(lambda l: l.startswith("listening on")).rsplit(":", 1)[1])
        replicas.append((name, process, port))
    return replicas


def served(ports):
    """Per replica, calls completed and calls that waited for a slot in the replica (its HealthCheck
    message `served=N waited=M`)."""
    import grpc
    messages, services = stubs()
    counts = []
    for port in ports:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = services.AgentHandlerStub(channel).HealthCheck(messages.HealthCheckRequest(), timeout=5)
            counts.append([int(field.split("=", 1)[1]) for field in answer.message.split()])
    return counts


class Proxy:
    def __init__(self, name, process, port, admin=None):
        self.name, self.process, self.port, self.admin = name, process, port, admin

    def pools(self):
        status, body = http_get(f"http://127.0.0.1:{self.admin}/pools")
        return json.loads(body) if status == 200 else []

    def endpoints(self):
        pool = next((p for p in self.pools() if p.get("agent") == AGENT), {})
        return pool.get("endpoints") or []

    def wait_ready(self, replicas, timeout=30.0):
        """Until /pools shows every replica healthy (the mesh probes them first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.admin is None:
                return
            endpoints = self.endpoints()
            if len(endpoints) == replicas and all(e.get("state") == "healthy" for e in endpoints):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: replicas not all healthy: {self.endpoints()}")


def start_mesh(name, bin_dir, workdir, ports, balancer):
    """bindu-mesh with one declared pool of static replicas; None when the build refuses the config."""
    mesh_dir = workdir / name
    mesh_dir.mkdir()
    listen, admin = free_port(), free_port()
    config = mesh_dir / "mesh.yaml"
    config.write_text(
        f"core: {{address: 127.0.0.1:{free_port()}}}\nregistry: {{listen: 127.0.0.1:{free_port()}}}\n"
        f"admin: {{listen: 127.0.0.1:{admin}}}\nstate: {{dir: {mesh_dir / 'state'}}}\nbalancer: {balancer}\n"
        f"pools:\n  - agent: {AGENT}\n    listen: 127.0.0.1:{listen}\n"
        f"    replicas: [{', '.join(f'127.0.0.1:{p}' for p in ports)}]\n")
    check = subprocess.run([str(bin_dir / "bindu-mesh"), "--config", str(config), "--check"],
                           capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        if "unknown key" in check.stderr + check.stdout:
            message = (check.stderr + check.stdout).strip().splitlines()[0]
            return None, re.sub(r"^.*?mesh\.yaml:\d+:\d+: ", "", message)
        raise RuntimeError(f"{name}: config refused:\n{check.stderr}{check.stdout}")
    process = Process([str(bin_dir / "bindu-mesh"), "--config", str(config), "--log-level", "warning"],
                      cwd=mesh_dir, name=name)
    wait_port(listen, proc=process.proc)
    return Proxy(name, process, listen, admin), None


def start_haproxy(name, workdir, ports, balance):
    listen = free_port()
    config = workdir / f"{name}.cfg"
    algorithm, *options = balance.split()
    server = f" maxconn {CONCURRENCY}" if "maxconn" in options else ""
    config.write_text(
        # Streams per client connection as bindu-mesh allows (upstream.max_concurrent_streams: 1000);
        # HAProxy's default of 100 holds a round-robin backlog at the client, delaying every call.
        "global\n  maxconn 4096\n  nbthread 2\n  tune.h2.max-concurrent-streams 1000\n\ndefaults\n  mode http\n  timeout connect 5s\n"
        "  timeout client 60s\n  timeout server 60s\n  timeout queue 60s\n\n"
        f"frontend grpc\n  bind 127.0.0.1:{listen} proto h2\n  default_backend replicas\n\n"
        f"backend replicas\n  balance {algorithm}\n"
        + "".join(f"  server r{i} 127.0.0.1:{p} proto h2{server}\n" for i, p in enumerate(ports, 1)))
    process = Process(["haproxy", "-f", str(config), "-db"], cwd=workdir, name=name)
    wait_port(listen, proc=process.proc)
    return Proxy(name, process, listen)


async def drive(port, schedule):
    """Sends the schedule open-loop; (latencies in ms of the calls that succeeded, failure codes)."""
    import grpc
    messages, services = stubs()
    latencies, failures = [], collections.Counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        stub = services.AgentHandlerStub(channel)
        loop = asyncio.get_running_loop()

        async def call(index, due, work_ms):
            request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=f"work:{work_ms} {index}")])
            try:
                answer = await stub.HandleMessages(request, timeout=DEADLINE)
                assert answer.content.endswith(f" {index}"), answer.content
                latencies.append((loop.time() - due) * 1000.0)
            except grpc.RpcError as error:
                failures[error.code().name] += 1

        start = loop.time() + 0.1
        tasks = []
        for index, (offset, work_ms) in enumerate(schedule):
            due = start + offset
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            tasks.append(asyncio.create_task(call(index, due, work_ms)))
        await asyncio.gather(*tasks)
    return latencies, failures


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run(args, bin_dir):
    configs = [c.strip() for c in args.agent_configs.split(",") if c.strip()]
    unknown = [c for c in configs if c.partition("@")[0] not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown --agent-configs {unknown}; known: {list(CONFIGS)}")
    rate = capacity() * args.agent_load
    schedule = make_schedule(rate, args.agent_duration, args.agent_seed)
    workdir = Path(tempfile.mkdtemp(prefix="bindu-mesh-agent-load-"))
    started, proxies, unsupported = [], {}, {}
    try:
        replicas = start_replicas(workdir, args.agent_seed)
        started += [p for _, p, _ in replicas]
        ports = [port for _, _, port in replicas]
        for name in configs:
            base, _, other_bin = name.partition("@")  # a mesh config may name another build
            kind, setting = CONFIGS[base]
            if kind == "mesh":
                proxy, refusal = start_mesh(name.replace("/", "_"), Path(other_bin) if other_bin else bin_dir,
                                            workdir, ports, setting)
                if proxy is None:
                    unsupported[name] = refusal
                    continue
            else:
                proxy = start_haproxy(name, workdir, ports, setting)
            started.append(proxy.process)
            proxies[name] = proxy
        for proxy in proxies.values():
            proxy.wait_ready(len(ports))
        print(f"\nagent-shaped load: replicas {', '.join(f'{n} (median {MEDIAN_MS * s:.0f} ms)' for n, s in REPLICAS)}, "
              f"{CONCURRENCY} calls at once each; capacity {capacity():.1f} calls/s; offered {rate:.1f} calls/s "
              f"({args.agent_load:.0%}), Poisson, seed {args.agent_seed}; {len(schedule)} calls in "
              f"{args.agent_duration:g} s per run; {args.agent_repetitions} repetition(s)", flush=True)
        results = collections.defaultdict(lambda: {"latencies": [], "failures": collections.Counter(),
                                                   "served": [0] * len(ports), "waited": 0})
        order = list(proxies)
        for repetition in range(args.agent_repetitions):
            shift = repetition % max(len(order), 1)
            for name in order[shift:] + order[:shift]:
                proxies[name].wait_ready(len(ports), timeout=60)
                before = served(ports)
                began = time.monotonic()
                latencies, failures = asyncio.run(drive(proxies[name].port, schedule))
                result = results[name]
                result["latencies"] += latencies
                result["failures"] += failures
                after = served(ports)
                result["served"] = [a + b[0] - c[0] for a, b, c in zip(result["served"], after, before)]
                result["waited"] += sum(b[1] - c[1] for b, c in zip(after, before))
                print(f"  {name}: {len(latencies)} ok, {sum(failures.values())} failed, "
                      f"p99 {percentile(latencies, 0.99):.0f} ms, {time.monotonic() - began:.1f} s", flush=True)
        print_table(configs, results, unsupported)
        for name, proxy in proxies.items():
            if proxy.admin is not None:
                ejections = {e.get("address"): e.get("ejections") for e in proxy.endpoints() if e.get("ejections")}
                warnings = [l for l in proxy.process.lines if "warning" in l.lower() or "error" in l.lower()]
                if ejections or warnings:
                    print(f"{name}: ejections {ejections or 'none'}; {len(warnings)} warning lines, e.g. {warnings[:2]}")
    finally:
        for process in reversed(started):
            process.stop(signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(configs, results, unsupported):
    base = results.get(BASELINE)
    base_p99 = percentile(base["latencies"], 0.99) if base and base["latencies"] else None
    names = "/".join(n for n, _ in REPLICAS)
    print(f"\n{'configuration':<28} {'calls':>6} {'failed':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'p99/' + BASELINE:>22} {'queued in replica':>17}  calls {names}")
    for name in configs:
        if name in unsupported:
            print(f"{name:<28} not supported by this build ({unsupported[name]})")
            continue
        result = results[name]
        lat, failed = result["latencies"], sum(result["failures"].values())
        ratio = f"{percentile(lat, 0.99) / base_p99:.2f}" if base_p99 else "-"
        failures = f"  failures {dict(result['failures'])}" if failed else ""
        print(f"{name:<28} {len(lat) + failed:>6} {failed:>6} {percentile(lat, 0.5):>8.0f} {percentile(lat, 0.9):>8.0f} "
              f"{percentile(lat, 0.99):>8.0f} {ratio:>22} {result['waited']:>17}  {'/'.join(str(n) for n in result['served'])}{failures}")
    print(f"(latency from each call's scheduled send; queued in replica: calls that waited in a replica "
          f"for one of its {CONCURRENCY} slots)")


if __name__ == "__main__":
    from standalone import run_part
    run_part(__doc__, add_arguments, run)
