"""What a call keeps to move to another replica is bounded (`retry.max_kept_request_bytes`): a
request within it moves when a replica answers UNAVAILABLE (`retry.on_unavailable`), a larger one
is not moved and its caller is told why."""
import grpc
import pytest

from faults import Scenario
from harness import scrape, value

POLICY = ("health:\n  interval: 60s\n  timeout: 1s\noutlier_detection:\n  consecutive_failures: 1000\n"
          "retry:\n  on_unavailable: true\n  max_kept_request_bytes: 2000\n")


@pytest.fixture
def scenario(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=2, policy_yaml=POLICY)
    yield scenario
    scenario.stop()


def test_a_request_within_the_limit_moves_and_a_larger_one_does_not(scenario):
    # r1 answers UNAVAILABLE to these calls, r2 echoes them: a call that starts on r1 moves to r2.
    def retries():
        return value(scrape(scenario.mesh), "bindu_mesh_retries_total", pool="echo-agent", reason="unavailable")

    before = retries()
    small = [scenario.ask(f"unavailable:r1 small {i}") for i in range(6)]
    assert all(answer.startswith("[r2]") for answer in small), small
    assert retries() > before, "some small calls started on r1 and moved"

    before = retries()
    outcomes = []
    for i in range(6):
        try:
            outcomes.append(scenario.ask(f"unavailable:r1 large {i} " + "x" * 3000))
        except grpc.RpcError as error:
            outcomes.append((error.code(), error.details()))
    failed = [o for o in outcomes if isinstance(o, tuple)]
    print([o if isinstance(o, tuple) else o[:20] for o in outcomes])
    assert failed, "some large calls started on r1"
    assert all(code == grpc.StatusCode.UNAVAILABLE and "was not kept, over retry.max_kept_request_bytes" in details
               for code, details in failed), failed
    assert all(o.startswith("[r2]") for o in outcomes if isinstance(o, str))
    assert retries() == before, "no large call moved"


def test_the_calls_of_one_connection_keep_no_more_than_its_budget(tmp_path, pb):
    """Each call may keep 8 MiB here, but the calls of one caller's connection keep 1.25 MiB between
    them (`callbacks.max_buffered_bytes`, the least for 4 streams): a 1.5 MiB request is forwarded and kept no more, so it
    is not moved when r1 answers UNAVAILABLE. Within the budget, a call still moves."""
    policy = POLICY.replace("max_kept_request_bytes: 2000", "max_kept_request_bytes: 8388608")
    scenario = Scenario(tmp_path, replicas=2, policy_yaml=policy, callbacks_yaml="  max_concurrent_streams: 4\n  max_buffered_bytes: 1310720\n")
    try:
        small = [scenario.ask(f"unavailable:r1 small {i}") for i in range(6)]
        assert all(answer.startswith("[r2]") for answer in small), small
        outcomes = []
        for i in range(6):
            try:
                outcomes.append(scenario.ask(f"unavailable:r1 large {i} " + "x" * 1_500_000, timeout=10))
            except grpc.RpcError as error:
                outcomes.append((error.code(), error.details()))
        failed = [o for o in outcomes if isinstance(o, tuple)]
        assert failed, "some large calls started on r1"
        assert all(code == grpc.StatusCode.UNAVAILABLE and "callbacks.max_buffered_bytes" in details
                   for code, details in failed), failed
        assert all(o.startswith("[r2]") for o in outcomes if isinstance(o, str))
    finally:
        scenario.stop()
