"""Losing no call when a replica dies, hangs or reports itself unhealthy (real processes). What
moves one call or ends it (an error returned as is, a refused connection, no replica at all) is
in Tests/BinduMeshSocketTests/CallPathTests.swift."""
import signal
import time

import grpc
import pytest

import faults
from faults import Scenario
from harness import wait_until


@pytest.fixture
def scenario(tmp_path, pb):
    scenario = Scenario(tmp_path)
    yield scenario
    scenario.stop()


def test_killed_replica_loses_no_call_and_gets_no_new_one(scenario):
    result = faults.kill(scenario)
    print("kill:", result)
    assert result["lost"] == 0
    assert set(result["codes"]) <= {"UNAVAILABLE"}, "calls in flight on the killed replica fail UNAVAILABLE"
    assert result["failed"] <= 4, "only calls in flight on the killed replica may fail (4 workers)"
    assert result["completed"] >= result["sent"] - result["failed"]
    assert result["late_answers"].get("r2", 0) == 0 and sum(result["late_answers"].values()) > 0


def test_hanging_replica_yields_deadline_exceeded_at_the_deadline_then_is_left_out(scenario):
    hung = scenario.replicas[1]
    hung.process.send(signal.SIGSTOP)
    try:
        outcomes = []
        for i in range(6):
            started = time.monotonic()
            try:
                outcomes.append(("ok", scenario.ask(f"h{i}", timeout=1.0), time.monotonic() - started))
            except grpc.RpcError as error:
                outcomes.append((error.code().name, error.details(), time.monotonic() - started))
        deadline_hits = [o for o in outcomes if o[0] == "DEADLINE_EXCEEDED"]
        assert deadline_hits, outcomes
        assert all(0.9 <= o[2] < 1.8 for o in deadline_hits), outcomes
        assert {o[0] for o in outcomes} <= {"ok", "DEADLINE_EXCEEDED"}
        wait_until(lambda: not scenario.mesh.endpoint(f"127.0.0.1:{hung.port}")["in_rotation"], 10,
                   "the hung replica out of rotation (its probes time out)")
        answers = [scenario.ask(f"after{i}", timeout=2.0) for i in range(8)]
        assert all(not a.startswith("[r2]") for a in answers), answers
        assert "replica out of rotation" in scenario.mesh.process.output()
    finally:
        hung.process.send(signal.SIGCONT)


def test_unhealthy_replica_leaves_rotation_and_comes_back(scenario):
    scenario.unhealthy_files[1].write_text("down")
    time.sleep(1.5)  # 2 failed probes at 300 ms
    answers = [scenario.ask(f"u{i}") for i in range(9)]
    assert all(not a.startswith("[r2]") for a in answers), answers
    scenario.unhealthy_files[1].unlink()
    time.sleep(1.5)
    answers = [scenario.ask(f"v{i}") for i in range(9)]
    assert sum(a.startswith("[r2]") for a in answers) == 3, answers


@pytest.mark.parametrize("kind", ["kill", "hang", "unhealthy"])
def test_fault_scenarios_lose_no_call(scenario, kind):
    result = faults.SCENARIOS[kind](scenario)
    print(kind, result)
    assert result["lost"] == 0
    assert result["late_answers"].get("r2", 0) == 0
    if kind == "unhealthy":
        assert result["failed"] == 0, "a replica taken out by health checks fails no call"
    if kind == "hang":
        scenario.replicas[1].process.send(signal.SIGCONT)
