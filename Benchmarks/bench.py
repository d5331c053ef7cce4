"""Side-by-side benchmark of bindu-mesh, HAProxy and nginx (grpc_pass) in front of three echo
replicas, and of one replica directly, on loopback, with h2load.

Every configuration is checked before and after the load (gRPC status 0, the right echo,
round-robin over the replicas), shapes are run interleaved and repeated, and one table per shape
is printed: requests/s, ratio to direct (median of per-repetition ratios, min-max), p50/p99
latency, proxy CPU seconds per 1,000 requests, proxy RSS after the load; then each proxy's RSS and
PSS idle (before the load) and loaded (after it), its threads, and its RSS by what is mapped
(Benchmarks/memory.py); each mesh's heap allocations per call (a uprobe on malloc, with perf);
and each proxy's system calls per call at 1 x 1 by name, every thread counted (strace -c).

That is the part `h2load` of `--parts`; the others are `agent` (agent-shaped load against
bindu-mesh and HAProxy balancing policies, Benchmarks/agent_load.py), `scaleout` (A2A
throughput with 1, 2 and 3 Bindu cores, Benchmarks/scale_out.py) and `registry` (three meshes
sharing their registry: propagation and failover, Benchmarks/shared_registry.py).
"""
import argparse
import collections
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
import conftest  # noqa: E402,F401  (generates the contract's Python stubs)
import grpc  # noqa: E402
from faults import stubs  # noqa: E402
from harness import Process, free_port, wait_port  # noqa: E402
import memory  # noqa: E402

PATH = "/bindu.grpc.AgentHandler/HandleMessages"
SHAPES = {"1x1": (1, 1), "1x64": (1, 64), "4x16": (4, 16)}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def request_body(workdir: Path) -> Path:
    messages = stubs()[0]
    payload = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content="ping")]).SerializeToString()
    body = workdir / "request.bin"
    body.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
    return body


class Target:
    """Something h2load sends to: a port, and the pids whose CPU and memory count."""

    def __init__(self, name, port, pids, replicas_expected):
        self.name, self.port, self.pids, self.replicas_expected = name, port, pids, replicas_expected

    def check(self, count=9):
        """Real gRPC answers: status 0, the right echo, the expected replicas."""
        messages, services = stubs()
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = services.AgentHandlerStub(channel)
            seen = collections.Counter()
            for i in range(count):
                request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=f"check {i}")])
                answer = stub.HandleMessages(request, timeout=5).content
                assert answer.endswith(f"] check {i}"), f"{self.name}: wrong answer {answer!r}"
                seen[answer.split("]")[0][1:]] += 1
        assert set(seen) == self.replicas_expected, f"{self.name}: answers from {dict(seen)}"
        if len(self.replicas_expected) > 1:
            assert max(seen.values()) - min(seen.values()) <= 1, f"{self.name}: not round-robin: {dict(seen)}"


def check_all(targets, attempts=30):
    """Checks every target, giving the mesh time to bring replicas into rotation (its first
    probe at start; after a saturating run, replicas whose probes timed out come back after
    `health.healthy_threshold` passing probes)."""
    for target in targets:
        for attempt in range(attempts):
            try:
                target.check()
                break
            except AssertionError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)


def start_replicas(bin_dir, workdir, count=3):
    replicas = []
    for i in range(1, count + 1):
        process = Process([str(bin_dir / "bindu-bench-replica"), "--name", f"r{i}"], cwd=workdir, name=f"r{i}")
        port = int(process.wait_line(lambda l: l.startswith("listening on")).rsplit(":", 1)[1])
        replicas.append((process, port))
    return replicas


def start_mesh(bin_dir, workdir, ports, name="mesh", extra_yaml=""):
    listen = free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"core: {{address: 127.0.0.1:{free_port()}}}\nregistry: {{listen: 127.0.0.1:{free_port()}}}\n"
        f"admin: {{listen: 127.0.0.1:{free_port()}}}\nstate: {{dir: {workdir / (name + '-state')}}}\n"
        f"pools:\n  - agent: echo-agent\n    listen: 127.0.0.1:{listen}\n    replicas: [{', '.join(f'127.0.0.1:{p}' for p in ports)}]\n"
        + extra_yaml)
    process = Process([str(bin_dir / "bindu-mesh"), "--config", str(config), "--log-level", "error"], cwd=workdir, name="mesh")
    wait_port(listen, proc=process.proc)
    return process, listen


def start_haproxy(workdir, ports):
    listen = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        "global\n  maxconn 4096\n  nbthread 2\n\ndefaults\n  mode http\n  timeout connect 5s\n"
        "  timeout client 60s\n  timeout server 60s\n\n"
        f"frontend grpc\n  bind 127.0.0.1:{listen} proto h2\n  default_backend replicas\n\n"
        "backend replicas\n  balance roundrobin\n"
        + "".join(f"  server r{i} 127.0.0.1:{p} proto h2\n" for i, p in enumerate(ports, 1)))
    process = Process(["haproxy", "-f", str(config), "-db"], cwd=workdir, name="haproxy")
    wait_port(listen, proc=process.proc)
    return process, listen


def start_nginx(workdir, ports):
    listen = free_port()
    (workdir / "nginx").mkdir(exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(
        f"worker_processes 2;\npid {workdir}/nginx.pid;\nerror_log {workdir}/nginx-error.log;\ndaemon off;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {workdir}/nginx; proxy_temp_path {workdir}/nginx;\n"
        f"  fastcgi_temp_path {workdir}/nginx; uwsgi_temp_path {workdir}/nginx; scgi_temp_path {workdir}/nginx;\n"
        "  http2_max_requests 100000000;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n"
        "  upstream replicas {\n" + "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
        + "    keepalive 64;\n  }\n"
        f"  server {{\n    listen 127.0.0.1:{listen} http2;\n    location / {{ grpc_pass grpc://replicas; }}\n  }}\n}}\n")
    process = Process(["nginx", "-c", str(config)], cwd=workdir, name="nginx")
    wait_port(listen, proc=process.proc)
    return process, listen


def all_pids(process):
    """The process and its children (nginx's workers)."""
    pids = [process.proc.pid]
    children = Path(f"/proc/{process.proc.pid}/task/{process.proc.pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    return pids


def run_h2load(target, shape, duration, body, workdir):
    connections, streams = SHAPES[shape]
    log = workdir / f"h2load-{target.name}-{shape}.log"
    before = sum(cpu_seconds(p) for p in target.pids)
    result = subprocess.run(
        ["h2load", "-c", str(connections), "-m", str(streams), "-D", str(duration), "--warm-up-time=1",
         "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log),
         f"http://127.0.0.1:{target.port}{PATH}"],
        capture_output=True, text=True, timeout=duration + 60)
    cpu = sum(cpu_seconds(p) for p in target.pids) - before
    out = result.stdout
    succeeded = int(out.split("requests:")[1].split("succeeded,")[0].split(",")[-1].strip().split()[0])
    failed = int(out.split("succeeded,")[1].split("failed")[0].strip())
    rps = float(out.split("finished in")[1].split(",")[1].split("req/s")[0].strip())
    times = sorted(int(line.split("\t")[2]) / 1000.0 for line in log.read_text().splitlines()
                   if line.split("\t")[1] == "200")
    log.unlink()
    assert failed == 0, f"{target.name} {shape}: {failed} requests failed\n{out}"
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")
    return {"rps": rps, "p50": p(0.50), "p99": p(0.99), "cpu_per_1k": cpu / max(succeeded, 1) * 1000, "requests": succeeded}


def mallocs_per_call(target, body, workdir, calls=20000):
    """Heap allocations per call in the target process, counted by a uprobe on libc's malloc
    (`perf probe`, needs root); None when that is not possible here."""
    perf = shutil.which("perf")
    libc = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6") if Path(p).exists()), None)
    if not perf or not libc or os.geteuid() != 0:
        return None
    subprocess.run([perf, "probe", "-q", "-x", libc, "malloc"], capture_output=True)
    if "probe_libc:malloc" not in subprocess.run([perf, "probe", "-l"], capture_output=True, text=True).stdout:
        return None
    stat = workdir / "malloc.stat"
    counting = subprocess.Popen([perf, "stat", "-x", ",", "-e", "probe_libc:malloc", "-p", str(target.pids[0]),
                                 "-o", str(stat)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    subprocess.run(["h2load", "-c", "1", "-m", "16", "-n", str(calls), "-d", str(body), "-H", "content-type: application/grpc",
                    "-H", "te: trailers", f"http://127.0.0.1:{target.port}{PATH}"], capture_output=True, timeout=120)
    counting.send_signal(signal.SIGINT)
    counting.wait(timeout=10)
    for line in stat.read_text().splitlines():
        if "probe_libc:malloc" in line and line.split(",")[0].isdigit():
            return int(line.split(",")[0]) / calls
    return None


def syscalls_per_call(target, body, workdir, calls=3000):
    """System calls per call of the target's processes (every thread) at 1 x 1, by name, counted
    by `strace -c` over `calls` calls; None when strace cannot attach here. strace slows the
    process: only the counts mean anything."""
    strace = shutil.which("strace")
    if not strace:
        return None
    tids = [tid for pid in target.pids if Path(f"/proc/{pid}").exists() for tid in os.listdir(f"/proc/{pid}/task")]
    out = workdir / f"{target.name}.strace"
    tracing = subprocess.Popen([strace, "-c", "-f", "-o", str(out)] + [arg for tid in tids for arg in ("-p", tid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    subprocess.run(["h2load", "-c", "1", "-m", "1", "-n", str(calls), "-d", str(body), "-H", "content-type: application/grpc",
                    "-H", "te: trailers", f"http://127.0.0.1:{target.port}{PATH}"], capture_output=True, timeout=300)
    time.sleep(0.3)
    tracing.send_signal(signal.SIGINT)
    tracing.wait(timeout=30)
    counts = {}
    for line in out.read_text().splitlines() if out.exists() else []:
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3]) / calls
    return counts or None


def syscall_table(counts):
    """Each target's system calls per call: those over 0.1 per call, then the total."""
    names = sorted({name for per in counts.values() for name, n in per.items() if n >= 0.1})
    lines = [f"{'syscalls per call (1 x 1)':<26}" + "".join(f"{name:>14}" for name in names) + f"{'total':>8}"]
    for target, per in counts.items():
        lines.append(f"{target:<26}" + "".join(f"{per.get(name, 0):>14.2f}" for name in names)
                     + f"{sum(per.values()):>8.2f}")
    return "\n".join(lines)


def main():
    import agent_load
    import scale_out
    import shared_registry
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="h2load,agent,scaleout,registry",
                        help="comma-separated: h2load (this file), agent (agent_load.py), scaleout (scale_out.py), "
                             "registry (shared_registry.py)")
    parser.add_argument("--duration", type=int, default=3, help="h2load: seconds of load per run (after 1 s warm-up)")
    parser.add_argument("--repetitions", type=int, default=3, help="h2load: repetitions")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--bin-dir", default=str(ROOT / ".build" / "release"))
    parser.add_argument("--mesh-variant", action="append", default=[], metavar="NAME,BIN_DIR,YAML",
                        help="h2load: another bindu-mesh in the same run: its name, the folder of its binary "
                             "(empty: --bin-dir) and YAML added to its config (\\n for new lines); repeatable")
    agent_load.add_arguments(parser)
    scale_out.add_arguments(parser)
    shared_registry.add_arguments(parser)
    args = parser.parse_args()
    bin_dir = Path(args.bin_dir).resolve()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"h2load", "agent", "scaleout", "registry"}
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}")
    if "h2load" in parts:
        h2load_part(args, bin_dir)
    if "agent" in parts:
        agent_load.run(args, bin_dir)
    if "scaleout" in parts:
        scale_out.run(args, bin_dir)
    if "registry" in parts:
        shared_registry.run(args, bin_dir)


def h2load_part(args, bin_dir):
    workdir = Path(tempfile.mkdtemp(prefix="bindu-mesh-bench-"))
    started = []
    try:
        replicas = start_replicas(bin_dir, workdir)
        started += [p for p, _ in replicas]
        ports = [port for _, port in replicas]
        mesh, mesh_port = start_mesh(bin_dir, workdir, ports)
        haproxy, haproxy_port = start_haproxy(workdir, ports)
        nginx, nginx_port = start_nginx(workdir, ports)
        started += [mesh, haproxy, nginx]
        names = {"r1", "r2", "r3"}
        targets = [
            Target("direct", ports[0], [replicas[0][0].proc.pid], {"r1"}),
            Target("bindu-mesh", mesh_port, all_pids(mesh), names),
            Target("haproxy", haproxy_port, all_pids(haproxy), names),
            Target("nginx", nginx_port, all_pids(nginx), names),
        ]
        # Other builds or settings of the mesh, side by side (e.g. the commit before a change).
        for variant in args.mesh_variant:
            name, variant_bin, extra = (variant.split(",", 2) + ["", ""])[:3]
            process, port = start_mesh(Path(variant_bin or bin_dir), workdir, ports, name,
                                       extra.replace("\\n", "\n") + ("\n" if extra else ""))
            started.append(process)
            targets.append(Target(name, port, all_pids(process), names))
        time.sleep(1.0)  # health probes mark the mesh's replicas healthy
        proxies = targets[1:]
        idle = {target.name: memory.usage(target.pids) for target in proxies}
        check_all(targets)
        body = request_body(workdir)
        shapes = args.shapes.split(",")
        results = collections.defaultdict(list)  # (shape, target) -> [run]
        for repetition in range(args.repetitions):
            for shape in shapes:
                order = targets[repetition % len(targets):] + targets[:repetition % len(targets)]
                for target in order:
                    results[(shape, target.name)].append(run_h2load(target, shape, args.duration, body, workdir))
        loaded = {target.name: memory.usage(target.pids) for target in proxies}
        check_all(targets)
        meshes = [targets[1]] + targets[4:]
        allocations = {target.name: mallocs_per_call(target, body, workdir) for target in meshes}
        syscalls = {target.name: syscalls_per_call(target, body, workdir) for target in proxies}
        syscalls = {name: counts for name, counts in syscalls.items() if counts}
        print(f"\nbindu-mesh benchmark: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}, "
              f"{time.strftime('%Y-%m-%d')}; {args.repetitions} x {args.duration} s per shape and configuration")
        for shape in shapes:
            direct = results[(shape, "direct")]
            print(f"\n{shape} (connections x streams)")
            print(f"{'configuration':<12} {'req/s':>9} {'ratio (min-max)':>20} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'CPU s/1k':>9} {'RSS MB':>7}")
            for target in targets:
                runs = results[(shape, target.name)]
                ratios = [run["rps"] / base["rps"] for run, base in zip(runs, direct)]
                rss = "" if target.name == "direct" else f"{sum(rss_mb(p) for p in target.pids if Path(f'/proc/{p}').exists()):.0f}"
                print(f"{target.name:<12} {statistics.median(r['rps'] for r in runs):>9.0f} "
                      f"{statistics.median(ratios):>8.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
                      f"{statistics.median(r['p50'] for r in runs):>8.2f} {statistics.median(r['p99'] for r in runs):>8.2f} "
                      f"{statistics.median(r['cpu_per_1k'] for r in runs):>9.3f} {rss:>7}")
        print("\n" + memory.table([(t.name, idle[t.name], loaded[t.name]) for t in proxies]))
        for name, count in allocations.items():
            if count is not None:
                print(f"\n{name} heap allocations per call (libc malloc, uprobe; 1 x 16): {count:.1f}")
        if syscalls:
            print("\n" + syscall_table(syscalls))
    finally:
        for process in reversed(started):
            process.stop(signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
