"""Abuse of the callback listener, one attack at a time on one connection, while a legitimate
client makes calls on another: the abusive connection is cut off (or its streams refused) with
the right code, the legitimate client sees no failure, the mesh's memory stays bounded, and no
replica leaves rotation or is ejected."""
import socket
import threading
import time
from pathlib import Path

import grpc
import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame,
                              SettingsFrame)

from faults import Scenario
from test_http2 import ENHANCE_YOUR_CALM, PREFACE, read_frames, request_headers
from harness import scrape, value

RSS_BOUND_MB = 64


@pytest.fixture
def scenario(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=3, policy_yaml="health:\n  interval: 500ms\n  timeout: 1s\n")
    yield scenario
    scenario.stop()


class LegitimateClient:
    """Calls back to back on a connection of its own until stopped; counts what failed."""

    def __init__(self, scenario):
        self.scenario, self.ok, self.failed = scenario, 0, []
        self.peak_rss = rss_mb(scenario)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                assert self.scenario.ask(f"legit {i}", timeout=10).endswith(f"legit {i}")
                self.ok += 1
            except (grpc.RpcError, AssertionError) as error:
                self.failed.append(repr(error))
            self.peak_rss = max(self.peak_rss, rss_mb(self.scenario))
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join(30)


def rss_mb(scenario) -> float:
    status = Path(f"/proc/{scenario.mesh.process.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def block(scenario, **extra):
    return hpack.Encoder().encode(request_headers(scenario, **extra))


def attacks(scenario):
    """Each attack: (name, the bytes after the preface and SETTINGS, the GOAWAY reason expected)."""
    request = block(scenario)
    return {
        "rapid reset": (b"".join(HeadersFrame(1 + 2 * i, data=request, flags=["END_HEADERS"]).serialize()
                                 + RstStreamFrame(1 + 2 * i, error_code=8).serialize() for i in range(400)),
                        "rapid_reset"),
        "empty DATA": (HeadersFrame(1, data=request, flags=["END_HEADERS"]).serialize()
                       + DataFrame(1, data=b"").serialize() * 100_000, "empty_data_flood"),
        "zero-length CONTINUATION": (HeadersFrame(1, data=request[:5]).serialize()
                                     + ContinuationFrame(1, data=b"").serialize() * 100_000, "continuation_flood"),
        "PING not read": (PingFrame(0, opaque_data=b"12345678").serialize() * 30_000, "control_frame_flood"),
        "SETTINGS not read": (SettingsFrame(0).serialize() * 30_000, "control_frame_flood"),
        "malformed requests": (b"".join(HeadersFrame(1 + 2 * i, data=block(scenario, connection="close"),
                                                     flags=["END_HEADERS", "END_STREAM"]).serialize()
                                        for i in range(400)), "stream_error_flood"),
    }


@pytest.mark.parametrize("name", ["rapid reset", "empty DATA", "zero-length CONTINUATION", "PING not read",
                                  "SETTINGS not read", "malformed requests"])
def test_an_attack_on_one_connection_costs_the_others_nothing(scenario, name):
    payload, reason = attacks(scenario)[name]
    scenario.ask("warm up")
    before_rss = rss_mb(scenario)
    before = scrape(scenario.mesh)
    legit = LegitimateClient(scenario)
    try:
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
            # The attacker writes everything at once and reads only at the end.
            sender = threading.Thread(target=lambda: _send_until_closed(sock, PREFACE + SettingsFrame(0).serialize()
                                                                       + payload), daemon=True)
            sender.start()
            sender.join(20)
            frames = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaways and goaways[-1].error_code == ENHANCE_YOUR_CALM, f"{name}: {frames[-3:]}"
        time.sleep(1.0)  # two probe intervals after the attack
    finally:
        legit.stop()
    after = scrape(scenario.mesh)
    peak_rss = max(legit.peak_rss, rss_mb(scenario))
    print(f"{name}: legitimate calls ok {legit.ok}, failed {len(legit.failed)}; "
          f"RSS {before_rss:.0f} MB, at most {peak_rss:.0f} MB")
    assert legit.ok > 5 and not legit.failed, legit.failed[:3]
    assert value(after, "bindu_mesh_http2_goaways_total", pool="echo-agent", reason=reason) \
        - value(before, "bindu_mesh_http2_goaways_total", pool="echo-agent", reason=reason) == 1
    assert value(after, "bindu_mesh_ejections_total", pool="echo-agent") \
        == value(before, "bindu_mesh_ejections_total", pool="echo-agent")
    assert value(after, "bindu_mesh_endpoints", pool="echo-agent", state="healthy") == 3
    assert peak_rss - before_rss < RSS_BOUND_MB


def _send_until_closed(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass  # the mesh closed the connection part way: what the test expects


def test_streams_that_send_only_headers_hold_no_replica(tmp_path, pb):
    """Eight connections each keep their 100 streams open with HEADERS and nothing more (and
    never read): a replica's stream is taken only once a request's first message is whole, so the
    replicas' stream slots (50 each here) stay free for the legitimate client."""
    scenario = Scenario(tmp_path, replicas=3, policy_yaml="health:\n  interval: 500ms\n  timeout: 1s\n",
                        replica_args=["--max-concurrent-streams", "50"])
    legit = None
    attackers = []
    try:
        scenario.ask("warm up")
        before = scrape(scenario.mesh)
        legit = LegitimateClient(scenario)
        request = block(scenario)
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", scenario.listen), timeout=10)
            sock.sendall(PREFACE + SettingsFrame(0).serialize() + b"".join(
                HeadersFrame(1 + 2 * i, data=request, flags=["END_HEADERS"]).serialize() for i in range(100)))
            attackers.append(sock)
        time.sleep(3)
        legit.stop()
        after = scrape(scenario.mesh)
        print(f"legitimate calls ok {legit.ok}, failed {len(legit.failed)}")
        assert legit.ok > 20 and not legit.failed, legit.failed[:3]
        assert value(after, "bindu_mesh_endpoints", pool="echo-agent", state="healthy") == 3
        assert value(after, "bindu_mesh_ejections_total", pool="echo-agent") \
            == value(before, "bindu_mesh_ejections_total", pool="echo-agent")
        assert value(after, "bindu_mesh_calls_in_flight", pool="echo-agent") >= 800, "the streams are the mesh's"
    finally:
        if legit:
            legit.stop()
        for sock in attackers:
            sock.close()
        scenario.stop()
