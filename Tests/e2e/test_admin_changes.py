"""Changes through the admin listener: draining one of three replicas under load by hand
(`bindu-mesh endpoint drain`), and undraining it; a change without the bearer token of
`admin.token_file` is refused with 403 and changes nothing."""
import subprocess
import time
import urllib.request

import pytest

from faults import Scenario
from harness import BIN_DIR, wait_until
from test_abuse import LegitimateClient

TOKEN = "s3cret-token-for-the-admin-api"


@pytest.fixture
def scenario(tmp_path, pb):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    scenario = Scenario(tmp_path, replicas=3, policy_yaml="health:\n  interval: 500ms\n  timeout: 1s\n",
                        admin_yaml=f"  token_file: {token_file}\n")
    scenario.token_file = token_file
    yield scenario
    scenario.stop()


def endpoint(scenario, replica):
    return next(e for e in scenario.mesh.pools()[0]["endpoints"] if e["address"] == f"127.0.0.1:{replica.port}")


def command(scenario, action, replica, token_file):
    return subprocess.run([str(BIN_DIR / "bindu-mesh"), "endpoint", action, "echo-agent", f"127.0.0.1:{replica.port}",
                           "--admin", f"127.0.0.1:{scenario.mesh.admin_port}", "--token-file", str(token_file)],
                          capture_output=True, text=True, timeout=30)


def post(scenario, path, token=None):
    request = urllib.request.Request(f"http://127.0.0.1:{scenario.mesh.admin_port}{path}", method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_drained_replica_takes_no_new_calls_and_undrained_takes_them_again(scenario):
    drained = scenario.replicas[1]
    legit = LegitimateClient(scenario)
    try:
        time.sleep(1)
        done = command(scenario, "drain", drained, scenario.token_file)
        assert done.returncode == 0, done.stderr
        assert f"drained 127.0.0.1:{drained.port}" in done.stdout
        time.sleep(0.5)  # calls in flight on it finish
        state = endpoint(scenario, drained)
        assert state["state"] == "draining" and not state["in_rotation"], state
        calls = {r.name: r.calls() for r in scenario.replicas}
        time.sleep(2)
        after = {r.name: r.calls() for r in scenario.replicas}
        assert after[drained.name] == calls[drained.name], "a drained replica takes no new call"
        assert all(after[r.name] > calls[r.name] for r in scenario.replicas if r is not drained)
        probe = endpoint(scenario, drained)["last_probe"]
        assert probe["passed"] and probe["seconds_ago"] < 2, "its health checks go on"

        done = command(scenario, "undrain", drained, scenario.token_file)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: drained.calls() > after[drained.name], 10, "the undrained replica takes calls again")
        assert endpoint(scenario, drained)["state"] == "healthy"
    finally:
        legit.stop()
    print(f"legitimate calls ok {legit.ok}, failed {len(legit.failed)}")
    assert legit.ok > 20 and not legit.failed, legit.failed[:3]
    assert "replica drained by hand" in scenario.mesh.process.output()


def test_a_change_without_the_token_is_refused_and_changes_nothing(scenario, tmp_path):
    replica = scenario.replicas[0]
    path = f"/pools/echo-agent/endpoints/127.0.0.1:{replica.port}/drain"
    status, body = post(scenario, path)
    assert status == 403 and "bearer token is needed" in body, body
    status, body = post(scenario, path, token="not-the-right-token-at-all")
    assert status == 403 and "not the one in admin.token_file" in body, body
    wrong = tmp_path / "wrong-token"
    wrong.write_text("another-token-of-some-length\n")
    done = command(scenario, "drain", replica, wrong)
    assert done.returncode != 0 and "403" in done.stderr, done.stderr
    assert endpoint(scenario, replica)["state"] == "healthy"
    assert scenario.ask("still in rotation") in {f"[r{i}] still in rotation" for i in (1, 2, 3)}
    # Reading stays open; an unknown pool or endpoint is named.
    assert post(scenario, "/pools/nope/endpoints/127.0.0.1:1/drain", token=TOKEN) == (404, 'no pool "nope"\n')
    assert post(scenario, "/pools/echo-agent/endpoints/127.0.0.1:1/drain", token=TOKEN)[0] == 404


def test_without_a_token_file_changes_are_off(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, policy_yaml="health:\n  interval: 60s\n  timeout: 1s\n")
    try:
        status, body = post(scenario, f"/pools/echo-agent/endpoints/127.0.0.1:{scenario.replicas[0].port}/drain",
                            token=TOKEN)
        assert status == 403 and "set admin.token_file" in body, body
    finally:
        scenario.stop()
