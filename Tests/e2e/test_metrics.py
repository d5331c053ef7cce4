"""Prometheus metrics, the admin listener and grpc.health.v1, over real sockets."""
import concurrent.futures
import importlib
import json
import subprocess
import time
import urllib.parse

import grpc
import pytest

from faults import Scenario
from harness import Mesh, Replica, agent_config, free_port, http_get, require_tool, scrape, value, wait_port

HANDLE = {"grpc_service": "bindu.grpc.AgentHandler", "grpc_method": "HandleMessages", "grpc_type": "unary"}
EMPTY_POOL = "  - agent: empty-agent\n    listen: 127.0.0.1:{port}\n"


@pytest.fixture
def scenario(tmp_path, pb):
    empty_port = free_port()
    scenario = Scenario(tmp_path, replicas=2, extra_pool_yaml=EMPTY_POOL.format(port=empty_port))
    scenario.empty_port = empty_port
    yield scenario
    scenario.stop()


def make_known_calls(scenario):
    for i in range(5):
        scenario.ask(f"ok {i}")
    for i in range(3):
        with pytest.raises(grpc.RpcError) as failure:
            scenario.ask(f"fail:{i}")
        assert failure.value.code() == grpc.StatusCode.INTERNAL
    messages, services = importlib.import_module("agent_handler_pb2"), importlib.import_module("agent_handler_pb2_grpc")
    with grpc.insecure_channel(f"127.0.0.1:{scenario.empty_port}") as channel:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as failure:
                services.AgentHandlerStub(channel).HandleMessages(messages.HandleRequest(), timeout=5)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


def test_every_counter_and_histogram_matches_the_calls_made(scenario):
    before = scrape(scenario.mesh)
    # Counters of events that have not happened exist at 0, so rate() sees the first one.
    for pool in ("echo-agent", "empty-agent"):
        for reason in ("connect_failed", "refused_stream", "goaway", "unavailable", "replay"):
            assert [s.value for s in before if s.name == "bindu_mesh_retries_total"
                    and s.labels == {"pool": pool, "reason": reason}] == [0.0], (pool, reason)
        for reason in ("rapid_reset", "empty_data_flood", "continuation_flood", "control_frame_flood"):
            assert [s.value for s in before if s.name == "bindu_mesh_http2_goaways_total"
                    and s.labels == {"pool": pool, "reason": reason}] == [0.0], (pool, reason)
    base = {k: value(before, f"grpc_server_{k}", pool="echo-agent", **HANDLE)
            for k in ("started_total", "msg_received_total", "msg_sent_total", "handling_seconds_count")}
    make_known_calls(scenario)
    samples = scrape(scenario.mesh)
    server = dict(pool="echo-agent", **HANDLE)
    assert value(samples, "grpc_server_started_total", **server) - base["started_total"] == 8
    assert value(samples, "grpc_server_handled_total", grpc_code="Internal", **server) == 3
    assert value(samples, "grpc_server_handled_total", **server) - value(before, "grpc_server_handled_total", **server) == 8
    assert value(samples, "grpc_server_msg_received_total", **server) - base["msg_received_total"] == 8
    assert value(samples, "grpc_server_msg_sent_total", **server) - base["msg_sent_total"] == 5
    assert value(samples, "grpc_server_handling_seconds_count", **server) - base["handling_seconds_count"] == 8
    empty = dict(pool="empty-agent", **HANDLE)
    assert value(samples, "grpc_server_handled_total", grpc_code="Unavailable", **empty) == 2
    assert value(samples, "grpc_server_started_total", **empty) == 2

    # The same calls as the mesh made them, per replica.
    endpoints = {f"127.0.0.1:{r.port}" for r in scenario.replicas}
    client = [s for s in samples if s.name == "grpc_client_handled_total" and s.labels.get("grpc_method") == "HandleMessages"]
    assert {s.labels["endpoint"] for s in client} == endpoints
    assert value(samples, "grpc_client_handled_total", grpc_code="Internal", pool="echo-agent", **HANDLE) == 3
    assert value(samples, "grpc_client_handling_seconds_count", pool="echo-agent", **HANDLE) == \
        value(samples, "grpc_client_handled_total", pool="echo-agent", **HANDLE)
    # Probes are client calls too, and counted by result.
    assert value(samples, "grpc_client_handled_total", grpc_method="HealthCheck", grpc_code="OK") > 0
    assert value(samples, "bindu_mesh_health_probes_total", pool="echo-agent", result="passed") > 0
    assert value(samples, "bindu_mesh_endpoints", pool="echo-agent", state="healthy") == 2
    assert value(samples, "bindu_mesh_endpoints", pool="empty-agent", state="healthy") == 0


def test_retries_and_ejections_are_counted(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=3)
    try:
        scenario.replicas[0].stop()
        for i in range(12):
            scenario.ask(f"r{i}")
        time.sleep(1.0)  # two probe intervals: the stopped replica is out of rotation
        samples = scrape(scenario.mesh)
        assert value(samples, "bindu_mesh_retries_total", pool="echo-agent", reason="connect_failed") >= 1
        assert value(samples, "bindu_mesh_health_probes_total", pool="echo-agent", result="failed") >= 1
        status, body = http_get(f"http://127.0.0.1:{scenario.mesh.admin_port}/pools")
        pools = {p["agent"]: p for p in json.loads(body)}
        states = {e["address"]: e["state"] for e in pools["echo-agent"]["endpoints"]}
        assert states[f"127.0.0.1:{scenario.replicas[0].port}"] in ("unhealthy", "ejected")
        assert sorted(states.values()).count("healthy") == 2
    finally:
        scenario.stop()


def test_a_real_prometheus_scrapes_the_mesh(scenario, tmp_path):
    make_known_calls(scenario)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: bindu-mesh\n    static_configs:\n      - targets: ['127.0.0.1:{scenario.mesh.admin_port}']\n")
    prometheus = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=60, proc=prometheus)
        query = 'sum(grpc_server_handled_total{pool="echo-agent",grpc_method="HandleMessages",grpc_code="Internal"})'
        deadline = time.monotonic() + 60
        result = None
        while time.monotonic() < deadline:
            status, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?query=" + urllib.parse.quote(query))
            data = json.loads(body)["data"]["result"] if status == 200 else []
            if data:
                result = float(data[0]["value"][1])
                break
            time.sleep(0.5)
        assert result == 3.0
    finally:
        prometheus.terminate()
        prometheus.wait(10)


def test_metrics_stay_consistent_under_concurrent_scrapes(scenario):
    before = value(scrape(scenario.mesh), "grpc_server_handled_total", pool="echo-agent", **HANDLE)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(scenario.ask, f"c{i}") for i in range(200)]
        scrapes = [pool.submit(scrape, scenario.mesh) for _ in range(40)]
        [c.result() for c in calls]
        [s.result() for s in scrapes]
    samples = scrape(scenario.mesh)
    assert value(samples, "grpc_server_handled_total", pool="echo-agent", **HANDLE) - before == 200
    assert value(samples, "grpc_server_handling_seconds_count", pool="echo-agent", **HANDLE) == \
        value(samples, "grpc_server_handled_total", pool="echo-agent", **HANDLE)
    assert scenario.mesh.process.proc.poll() is None


def test_readyz_and_grpc_health_follow_registration_and_replicas(tmp_path, core, cleanup, pb):
    health_pb2, health_grpc = importlib.import_module("health_pb2"), importlib.import_module("health_pb2_grpc")
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, core.port, "health:\n  interval: 300ms\n  timeout: 250ms\n")
    cleanup.append(mesh)
    mesh.start()
    readyz = lambda: http_get(f"http://127.0.0.1:{mesh.admin_port}/readyz")
    assert http_get(f"http://127.0.0.1:{mesh.admin_port}/healthz") == (200, "ok\n")
    status, body = readyz()
    assert status == 503 and "no agent registered" in body

    replica = Replica(tmp_path, "r1", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=free_port()))
    cleanup.append(replica)
    assert readyz()[0] == 200
    health = health_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{mesh.callback_port}"))
    check = lambda service="": health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    assert check() == health_pb2.HealthCheckResponse.SERVING
    assert check("echo-agent") == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as failure:
        check("other-agent")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND

    replica.stop()
    deadline = time.monotonic() + 10
    while readyz()[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    status, body = readyz()
    assert status == 503 and 'no healthy replica in pool "echo-agent"' in body
    assert check() == health_pb2.HealthCheckResponse.NOT_SERVING
    pools = json.loads(http_get(f"http://127.0.0.1:{mesh.admin_port}/pools")[1])
    assert pools[0]["registered_with_core"] is True and pools[0]["did"].startswith("did:")


def test_access_log_has_one_line_per_call(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, admin_yaml="  access_log: true\n")
    try:
        access_lines = lambda: [l for l in scenario.mesh.process.output().splitlines() if l.endswith("] call")]
        time.sleep(0.3)  # the lines of the calls that found the replica healthy are read by then
        before = len(access_lines())
        for i in range(3):
            scenario.ask(f"logged {i}")
        with pytest.raises(grpc.RpcError):
            scenario.ask("fail:logged")
        time.sleep(0.3)
        lines = access_lines()
        assert len(lines) - before == 4
        assert sum("grpc.code=OK" in l for l in lines) >= 3 and any("grpc.code=Internal" in l for l in lines)
        assert all("rpc.method=/bindu.grpc.AgentHandler/" in l for l in lines)
    finally:
        scenario.stop()


def test_paths_outside_the_contract_share_one_metric_label(scenario):
    """Made-up `:path`s are answered UNIMPLEMENTED by the mesh, never forwarded, and all counted as
    grpc_method="unknown", so a caller cannot grow /metrics without bound."""
    scenario.ask("ok")
    before = http_get(f"http://127.0.0.1:{scenario.mesh.admin_port}/metrics")[1]
    for i in range(40):
        call = scenario.channel.unary_unary(f"/made.up.Service{i}/Method{i}")
        with pytest.raises(grpc.RpcError) as failure:
            call(b"", timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    after = http_get(f"http://127.0.0.1:{scenario.mesh.admin_port}/metrics")[1]
    assert "made.up" not in after and "Method3" not in after
    samples = scrape(scenario.mesh)
    assert value(samples, "grpc_server_started_total", grpc_service="unknown", grpc_method="unknown") == 40
    assert value(samples, "grpc_client_started_total", grpc_service="unknown", grpc_method="unknown") == 0
    assert value(samples, "bindu_mesh_http2_refused_requests_total", reason="path") == 40
    # One new label set on the server side and one per replica on the client side, not forty.
    assert len(after.splitlines()) - len(before.splitlines()) < 200
