"""Connections to replicas: one multiplexed connection, closed when idle, checked by PING."""
import signal
import subprocess
import time

from faults import Scenario
from harness import require_tool

SLOW_PROBES = "health:\n  interval: 60s\n  timeout: 1s\n"


def connections_to(port):
    """Established TCP connections to 127.0.0.1:port, from `ss`."""
    out = subprocess.run([require_tool("ss"), "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_calls_share_one_connection_per_event_loop_and_idle_ones_close(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, policy_yaml=SLOW_PROBES + "upstream:\n  idle_timeout: 1s\n  keepalive_interval: off\n")
    try:
        port = scenario.replicas[0].port
        for i in range(50):
            scenario.ask(f"m{i}")
        assert 1 <= connections_to(port) <= 2, "calls are multiplexed: one connection per event loop"
        time.sleep(2.5)
        assert connections_to(port) == 0, "idle connections close after upstream.idle_timeout"
        assert scenario.ask("again").endswith("again"), "and the next call connects again"
    finally:
        scenario.stop()


def test_replica_that_stops_answering_pings_loses_its_connection(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=2, policy_yaml=SLOW_PROBES
                        + "upstream:\n  keepalive_interval: 300ms\n  keepalive_timeout: 300ms\n")
    try:
        frozen = scenario.replicas[0]
        frozen.process.send(signal.SIGSTOP)
        scenario.mesh.process.wait_line(lambda l: "did not answer a keepalive PING" in l, timeout=10)
        assert scenario.mesh.process.proc.poll() is None
    finally:
        scenario.replicas[0].process.send(signal.SIGCONT)
        scenario.stop()
