"""Fault scenarios over real processes: a steady stream of calls through bindu-mesh to three
echo replicas while one replica is killed, hangs, or reports itself unhealthy.

Used by the tests (test_faults.py) and by `scripts/faults`, which prints the counts.
"""
import collections
import concurrent.futures
import importlib
import signal
import threading
import time
from pathlib import Path

import grpc

from harness import BIN_DIR, Mesh, Replica, free_port, scrape, value

POLICY_YAML = """health:
  interval: 300ms
  timeout: 250ms
  unhealthy_threshold: 2
  healthy_threshold: 2
outlier_detection:
  consecutive_failures: 3
  max_ejection_percent: 50
"""


def stubs():
    return importlib.import_module("agent_handler_pb2"), importlib.import_module("agent_handler_pb2_grpc")


class Scenario:
    """Three static echo replicas behind a declared pool; no core needed for the data path."""

    def __init__(self, workdir: Path, replicas=3, extra_pool_yaml="", policy_yaml=POLICY_YAML, admin_yaml="",
                 callbacks_yaml="", replica_args=()):
        self.workdir = workdir
        self.unhealthy_files = [workdir / f"r{i}.unhealthy" for i in range(1, replicas + 1)]
        self.replicas = [
            Replica(workdir, f"r{i}", extra_args=["--unhealthy-file", str(self.unhealthy_files[i - 1]), "--log-calls",
                                                  *replica_args])
            for i in range(1, replicas + 1)
        ]
        # No `listen`: the pool takes a port of the system's (`callbacks.first_port: 0`).
        pool = ("pools:\n  - agent: echo-agent\n    replicas:\n"
                + "".join(f"      - 127.0.0.1:{r.port}\n" for r in self.replicas) + extra_pool_yaml)
        self.mesh = Mesh(workdir, core_port=free_port(), extra_yaml=policy_yaml + pool, admin_yaml=admin_yaml,
                         callbacks_yaml=callbacks_yaml)
        self.mesh.start()
        self.listen = self.mesh.pool_port("echo-agent")
        messages, services = stubs()
        self.messages = messages
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.listen}")
        self.stub = services.AgentHandlerStub(self.channel)
        self.wait_all_healthy()

    def wait_all_healthy(self, timeout=15.0):
        """Until a round of calls reaches every replica."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            for _ in range(len(self.replicas) * 2):
                try:
                    seen.add(self.ask("ping", timeout=2).split("]")[0][1:])
                except grpc.RpcError:
                    pass
            if len(seen) == len(self.replicas):
                return
            time.sleep(0.2)
        raise TimeoutError("not every replica took calls")

    def ask(self, text, timeout=5.0):
        request = self.messages.HandleRequest(messages=[self.messages.ChatMessage(role="user", content=text)])
        return self.stub.HandleMessages(request, timeout=timeout).content

    def retries(self):
        """Calls moved to another replica so far (`bindu_mesh_retries_total`)."""
        return value(scrape(self.mesh), "bindu_mesh_retries_total")

    def stop(self):
        self.channel.close()
        self.mesh.stop()
        for replica in self.replicas:
            replica.stop()


def run_load(scenario: Scenario, fault, duration=4.0, fault_at=1.0, settle=2.0, workers=4, deadline=2.0):
    """Sends calls from `workers` threads for `duration` seconds; calls `fault()` at `fault_at`.

    Returns counts: sent, completed, failed (by code), retried, lost (no answer at all), and which
    replicas answered the calls sent after `fault_at + settle`.
    """
    counts = collections.Counter()
    codes = collections.Counter()
    late_answers = collections.Counter()
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + duration
    settled_at = start + fault_at + settle
    retries_before = scenario.retries()

    def worker(index):
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            sent_at = time.monotonic()
            with lock:
                counts["sent"] += 1
            try:
                answer = scenario.ask(f"sleep:20 w{index}-{n}", timeout=deadline)
                with lock:
                    counts["completed"] += 1
                    if sent_at >= settled_at:
                        late_answers[answer.split("]")[0][1:]] += 1
            except grpc.RpcError as error:
                elapsed = time.monotonic() - sent_at
                with lock:
                    # An answer far past the deadline counts as lost, not failed.
                    if not (error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed > deadline + 2.0):
                        counts["failed"] += 1
                        codes[error.code().name] += 1

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(worker, i) for i in range(workers)]
        time.sleep(fault_at)
        fault()
        concurrent.futures.wait(futures, timeout=duration + deadline + 10)
    with lock:
        result = {"sent": counts["sent"], "completed": counts["completed"], "failed": counts["failed"],
                  "retried": scenario.retries() - retries_before,
                  "lost": counts["sent"] - counts["completed"] - counts["failed"],
                  "codes": dict(codes), "late_answers": dict(late_answers)}
    return result


def kill(scenario):
    return run_load(scenario, lambda: scenario.replicas[1].stop(signal.SIGKILL))


def hang(scenario):
    return run_load(scenario, lambda: scenario.replicas[1].process.send(signal.SIGSTOP))


def unhealthy(scenario):
    return run_load(scenario, lambda: scenario.unhealthy_files[1].write_text("down"))


SCENARIOS = {"kill": kill, "hang": hang, "unhealthy": unhealthy}
