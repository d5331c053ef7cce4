"""Traces over OTLP to a real Arize Phoenix: a server span per call the mesh forwards, an attempt
span per replica tried, the caller's trace continued and the attempt's context given to the
replica, registrations traced, and a collector that goes away costs spans, never calls."""
import concurrent.futures
import re
import secrets

import grpc
import pytest

from harness import ROOT, Mesh, Replica, a2a_ask, agent_config, free_port, wait_until
from trace_backend import Phoenix
from harness import scrape, value

HANDLE = "bindu.grpc.AgentHandler/HandleMessages"
REGISTER = "bindu.grpc.BinduService/RegisterAgent"


def tracing_env(project, **extra):
    """Spans leave the mesh within a fifth of a second (the default batch delay is 5 s), into a
    Phoenix project of the test's own."""
    return {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
            **extra}


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """One Phoenix for the module's tests: each test's mesh sends to a project of its own."""
    server = Phoenix(tmp_path_factory.mktemp("phoenix")).start()
    yield server
    server.stop()


def tracing_yaml(endpoint, protocol, service):
    return f"tracing:\n  otlp_endpoint: {endpoint}\n  otlp_protocol: {protocol}\n  service_name: {service}\n"


def is_call(span):
    """The server span of a forwarded call (Phoenix keeps no span kind: the attributes tell)."""
    return span["name"] == HANDLE and "bindu_mesh.pool" in span["attributes"]


def children(spans, parent):
    return [s for s in spans if s["parent_id"] == parent["span_id"]]


def test_a2a_messages_through_the_core_make_a_server_span_and_an_attempt_span_per_call(
        tmp_path, core, cleanup, phoenix):
    service = "mesh-a2a"
    # Turned on as Bindu's docs say for the core: OTEL_EXPORTER_OTLP_ENDPOINT, the traces URL itself.
    mesh = Mesh(tmp_path, core.port, extra_yaml=f"tracing:\n  otlp_protocol: http/protobuf\n  service_name: {service}\n",
                env=tracing_env(service, OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.otlp_http_endpoint))
    cleanup.append(mesh)
    mesh.start()
    a2a_port = free_port()
    replicas = [Replica(tmp_path, f"r{i}", core_port=mesh.registry_port, agent_config=agent_config(a2a_port=a2a_port))
                for i in (1, 2)]
    cleanup.extend(replicas)
    for i in range(3):
        state, text = a2a_ask(f"http://localhost:{a2a_port}/", f"traced {i}")
        assert state == "completed" and text.endswith(f"traced {i}")

    def calls():
        spans = phoenix.spans(service)
        return [s for s in spans if is_call(s)], spans
    wait_until(lambda: len(calls()[0]) >= 3, 30, "three HandleMessages server spans in Phoenix")
    servers, spans = calls()
    assert len(servers) == 3, [s["attributes"] for s in servers]
    ports = {r.port for r in replicas}
    for server in servers:
        attributes = server["attributes"]
        assert attributes["rpc.system"] == "grpc" and attributes["rpc.method"] == "HandleMessages"
        assert attributes["rpc.service"] == "bindu.grpc.AgentHandler"
        assert attributes["bindu_mesh.pool"] == "echo-agent"
        assert attributes["rpc.grpc.status_code"] == 0 and server["status_code"] != "ERROR"
        assert attributes["bindu_mesh.attempts"] == 1
        assert attributes["bindu_mesh.request_bytes"] > 0 and attributes["bindu_mesh.response_bytes"] > 0
        assert attributes["bindu_mesh.deadline_ms"] > 0, "the core's calls come with a deadline"
        attempts = children(spans, server)
        assert len(attempts) == 1, attempts
        attempt = attempts[0]
        assert attempt["name"] == HANDLE and attempt["trace_id"] == server["trace_id"]
        assert attempt["attributes"]["server.port"] in ports
        assert attempt["attributes"]["bindu_mesh.attempt"] == 1
        assert attempt["attributes"]["rpc.grpc.status_code"] == 0

    # The registrations: the mesh's with the core, and each replica's with the mesh.
    registrations = [s for s in spans if s["name"] == REGISTER]
    to_core = [s for s in registrations if "server.port" in s["attributes"]]
    assert any(s["attributes"]["server.port"] == core.port and s["attributes"]["bindu_mesh.success"] is True
               and s["attributes"]["bindu_mesh.pool"] == "echo-agent" for s in to_core), to_core
    from_replicas = [s for s in registrations if "client.address" in s["attributes"] and s["attributes"].get("bindu_mesh.success")]
    assert {s["attributes"]["bindu_mesh.callback"].rsplit(":", 1)[1] for s in from_replicas} >= {str(p) for p in ports}

    # The picture the docs show: a call's trace in Phoenix's UI, rendered by headless Chromium.
    shot = ROOT / "test-artifacts" / "phoenix-trace.png"
    phoenix.screenshot(shot, service, servers[0]["trace_id"])
    assert shot.stat().st_size > 20_000, "the screenshot is blank"


class RecordingReplica:
    """A grpcio AgentHandler that keeps the traceparent of each call it gets."""

    def __init__(self, pb):
        messages, services = pb
        self.received = []
        recorded = self.received

        class Handler(services.AgentHandlerServicer):
            def HandleMessages(self, request, context):
                metadata = dict(context.invocation_metadata())
                recorded.append((request.messages[-1].content, metadata.get("traceparent")))
                return messages.HandleResponse(content=request.messages[-1].content, state="completed")

            def HealthCheck(self, request, context):
                return messages.HealthCheckResponse(healthy=True, message="ok")

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        services.add_AgentHandlerServicer_to_server(Handler(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0)


def test_a_callers_trace_is_continued_and_a_retry_shows_two_attempts(tmp_path, pb, cleanup, phoenix):
    service = "mesh-propagation"
    messages, services = pb
    replica = RecordingReplica(pb)
    cleanup.append(replica)
    dead = free_port()  # nothing listens: an attempt there cannot connect, and the call moves on
    pool = (f"pools:\n  - agent: traced-agent\n    balancer: {{policy: round_robin}}\n"
            f"    health: {{interval: 60s, start_healthy: true}}\n"
            f"    outlier_detection: {{consecutive_failures: 100}}\n"
            f"    replicas:\n      - 127.0.0.1:{dead}\n      - 127.0.0.1:{replica.port}\n")
    mesh = Mesh(tmp_path, core_port=free_port(),
                extra_yaml=tracing_yaml(phoenix.otlp_grpc_endpoint, "grpc", service) + pool, env=tracing_env(service))
    cleanup.append(mesh)
    mesh.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.pool_port('traced-agent')}")
    stub = services.AgentHandlerStub(channel)
    sent = {}
    for i in range(4):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        sent[f"call {i}"] = (trace_id, parent)
        request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=f"call {i}")])
        answer = stub.HandleMessages(request, timeout=10, metadata=[("traceparent", f"00-{trace_id}-{parent}-01")])
        assert answer.content == f"call {i}"
    channel.close()

    def traced():
        return [s for s in phoenix.spans(service) if s["trace_id"] in {t for t, _ in sent.values()}]
    wait_until(lambda: len([s for s in traced() if is_call(s)]) >= 4, 30, "four server spans")
    spans = traced()
    retried = 0
    for content, received in replica.received:
        trace_id, parent = sent[content]
        server = next(s for s in spans if is_call(s) and s["trace_id"] == trace_id)
        assert server["parent_id"] == parent, "the mesh's span is the caller's span's child"
        attempts = sorted(children(spans, server), key=lambda s: s["attributes"]["bindu_mesh.attempt"])
        last = attempts[-1]
        assert last["attributes"]["server.port"] == replica.port
        # The replica's traceparent: the caller's trace, with the attempt that reached it as parent.
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", received), received
        assert received.split("-")[1] == trace_id and received.split("-")[2] == last["span_id"]
        if len(attempts) == 2:
            retried += 1
            first = attempts[0]
            assert first["attributes"]["server.port"] == dead and first["status_code"] == "ERROR"
            assert "cannot connect" in first["attributes"]["bindu_mesh.moved_on"]
            assert "cannot connect" in last["attributes"]["bindu_mesh.retry_reason"]
            assert last["attributes"]["bindu_mesh.attempt"] == 2
            assert server["attributes"]["bindu_mesh.attempts"] == 2
    assert retried >= 1, "round robin sends some call to the dead replica first"


def test_a_collector_that_goes_away_costs_spans_not_calls(tmp_path, pb, cleanup):
    messages, services = pb
    collector = Phoenix(tmp_path / "phoenix").start()
    cleanup.append(collector)
    replica = RecordingReplica(pb)
    cleanup.append(replica)
    pool = (f"pools:\n  - agent: traced-agent\n    health: {{interval: 60s, start_healthy: true}}\n"
            f"    replicas:\n      - 127.0.0.1:{replica.port}\n")
    env = tracing_env("gone", OTEL_BSP_MAX_QUEUE_SIZE="16", OTEL_BSP_EXPORT_TIMEOUT="1000",
                      OTEL_EXPORTER_OTLP_TIMEOUT="1000")
    mesh = Mesh(tmp_path, core_port=free_port(),
                extra_yaml=tracing_yaml(collector.otlp_grpc_endpoint, "grpc", "mesh-collector-gone") + pool, env=env)
    cleanup.append(mesh)
    mesh.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.pool_port('traced-agent')}")
    stub = services.AgentHandlerStub(channel)

    def ask(text):
        request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=text)])
        return stub.HandleMessages(request, timeout=10).content

    assert ask("before") == "before"
    wait_until(lambda: any(is_call(s) for s in collector.spans("gone")), 30, "the first call's span in Phoenix")
    assert value(scrape(mesh), "bindu_mesh_trace_spans_dropped_total") == 0
    collector.stop()
    for i in range(200):
        assert ask(f"after {i}") == f"after {i}"
    wait_until(lambda: value(scrape(mesh), "bindu_mesh_trace_spans_dropped_total") > 0, 30, "spans counted as dropped")
    mesh.process.wait_line(lambda l: "traces: spans not exported" in l, timeout=30)
    assert ask("still") == "still"
    channel.close()
