"""monitoring/: the alert rules under promtool, and the Grafana dashboard's queries against a real
Prometheus that scraped a mesh under load."""
import collections
import concurrent.futures
import datetime
import importlib
import ipaddress
import json
import math
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import certs
from harness import (ROOT, Core, Mesh, Process, Replica, a2a_ask, agent_config, free_port, http_get, require_tool,
                     wait_port, wait_until)

MONITORING = ROOT / "monitoring"


def alert_rules():
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_every_alert_has_a_case_that_fires_it_and_a_healthy_case_that_does_not():
    """In monitoring/alerts.test.yml each alert is expected to fire in some case, and some case of
    healthy series checks that it stays silent (every check of that alert in it expects none)."""
    unit_tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    assert unit_tests["rule_files"] == ["alerts.yml"]
    fired, silent = set(), set()
    for case in unit_tests["tests"]:
        checks = {}
        for check in case.get("alert_rule_test", []):
            checks.setdefault(check["alertname"], []).append(bool(check.get("exp_alerts")))
        for name, expected in checks.items():
            if any(expected):
                fired.add(name)
            else:
                silent.add(name)
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) == len(alert_rules()), "alert names are unique"
    assert names - fired == set(), "alerts no case fires"
    assert names - silent == set(), "alerts with no healthy case"
    assert (fired | silent) - names == set(), "cases of alerts that do not exist"


# --- The dashboard and the rules against a real Prometheus -------------------------------------
#
# A real Bindu core; three echo replicas that register with the mesh's registry (pool echo-agent,
# one call at a time per replica, so calls queue); a declared pool tls-agent whose callback
# listener serves TLS with a certificate that ends in 7 days; a Prometheus that scrapes the mesh
# every second and evaluates monitoring/alerts.yml. The load: A2A messages through the core (some
# failing), concurrent calls, a replica killed under load (retries, an ejection, failed probes),
# calls over TLS, and a caller that does not speak HTTP/2 (a GOAWAY).
#
# The dashboard's variables are given the values Grafana would give them: $datasource appears in
# datasource fields only; a query variable, `label_values(SELECTOR, LABEL)`, gets every value of
# LABEL on the series SELECTOR matches (the variables before it substituted in SELECTOR), as
# Grafana's "All" of a multi-value variable, `(v1|v2)`, regex-escaped; $__rate_interval is 1m
# (what Grafana gives it for a 15 s scrape interval); $__interval is 15s. Each target's `expr`
# is then run as Grafana runs a panel's query, over the span of the load (query_range).

RATE_INTERVAL, INTERVAL = "1m", "15s"
POLICY = ("balancer:\n  max_concurrent_calls: 1\n"
          "health:\n  interval: 300ms\n  timeout: 250ms\n  unhealthy_threshold: 2\n  healthy_threshold: 2\n"
          "outlier_detection:\n  consecutive_failures: 2\n  max_ejection_percent: 50\n")


def short_lived_server_certificate(directory: Path, days: int) -> Path:
    """soon.pem / soon-key.pem: a server certificate for localhost from the dev CA, ending in `days`."""
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = certs._certificate("soon", ca.subject, ca_key, key, now - datetime.timedelta(hours=1),
                              now + datetime.timedelta(days=days), sans)
    certs._write(directory, "soon", key, cert)
    return directory / "soon.pem"


class Prometheus:
    def __init__(self, workdir: Path, target_port: int, rule_file: Path):
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": "bindu-mesh", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }))
        self.process = Process([require_tool("prometheus"), f"--config.file={config}",
                                f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                               cwd=workdir, name="prometheus")
        wait_port(self.port, timeout=60, proc=self.process.proc)
        # It listens before it is ready (503 "Service Unavailable" until its storage is open).
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200, 60, "Prometheus ready")

    def api(self, path, **params):
        status, body = http_get(f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{path} {params}: {status} {body[:500]}"
        return answer["data"]

    def instant(self, query):
        return self.api("query", query=query)["result"]

    def stop(self):
        self.process.stop(signal.SIGTERM)


def ask(stub, text, timeout=5.0):
    messages = importlib.import_module("agent_handler_pb2")
    request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content=text)])
    return stub.HandleMessages(request, timeout=timeout).content


def make_load(mesh, core_url, replicas, echo_port, tls_port, certificates):
    services = importlib.import_module("agent_handler_pb2_grpc")
    for i in range(6):
        assert a2a_ask(core_url, f"hello {i}")[0] == "completed"
    for i in range(2):
        assert a2a_ask(core_url, f"fail:boom {i}")[0] == "failed"
    with grpc.insecure_channel(f"127.0.0.1:{echo_port}") as channel:
        stub = services.AgentHandlerStub(channel)
        answers = collections.Counter()

        def call(text):
            try:
                answers[ask(stub, text).split("]")[0][1:]] += 1
            except grpc.RpcError as error:
                answers[error.code().name] += 1

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(call, [f"sleep:50 queued {i}" for i in range(40)]))
            assert set(answers) == {r.name for r in replicas}, answers
            # One replica killed under load: calls to it are retried, it is ejected, probes fail.
            killer = threading.Timer(0.3, replicas[0].stop)
            killer.start()
            list(pool.map(call, [f"sleep:20 during {i}" for i in range(80)]))
            killer.join()
    credentials = grpc.ssl_channel_credentials(root_certificates=(certificates / "ca.pem").read_bytes())
    with grpc.secure_channel(f"localhost:{tls_port}", credentials) as channel:
        stub = services.AgentHandlerStub(channel)
        for i in range(5):
            assert ask(stub, f"over tls {i}").endswith(f"over tls {i}")
    # A caller that does not speak HTTP/2: GOAWAY.
    with socket.create_connection(("127.0.0.1", echo_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n")
        while sock.recv(65536):
            pass
    for i in range(3):
        assert a2a_ask(core_url, f"after {i}")[0] == "completed"


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A Prometheus that has scraped a mesh under load: (prometheus, start, end) of the load."""
    tmp = tmp_path_factory.mktemp("monitoring")
    stoppable = []
    try:
        certificates = certs.dev(tmp / "certs")
        soon = short_lived_server_certificate(certificates, days=7)
        (tmp / "core").mkdir()
        core = Core(tmp / "core")
        stoppable.append(core)
        core.start()
        tls_replica = Replica(tmp, "t1")
        stoppable.append(tls_replica)
        tls_port = free_port()
        tls_pool = (f"pools:\n  - agent: tls-agent\n    listen: 127.0.0.1:{tls_port}\n"
                    f"    replicas: [127.0.0.1:{tls_replica.port}]\n"
                    f"    listener_tls:\n      cert: {soon}\n      key: {certificates / 'soon-key.pem'}\n")
        (tmp / "mesh").mkdir()
        mesh = Mesh(tmp / "mesh", core.port, POLICY + tls_pool)
        stoppable.append(mesh)
        mesh.start()
        prometheus = Prometheus(tmp, mesh.admin_port, MONITORING / "alerts.yml")
        stoppable.append(prometheus)
        wait_until(lambda: prometheus.instant('up{job="bindu-mesh"} == 1'), 30, "Prometheus scraped the mesh")
        start = time.time()
        a2a_port = free_port()
        replicas = []
        for name in ("r1", "r2", "r3"):
            replica = Replica(tmp, name, core_port=mesh.registry_port, agent_config=agent_config(a2a_port=a2a_port))
            stoppable.append(replica)
            replicas.append(replica)
        make_load(mesh, f"http://localhost:{a2a_port}/", replicas, mesh.callback_port, tls_port, certificates)
        # Until Prometheus has scraped what the load left.
        wait_until(lambda: prometheus.instant('bindu_mesh_ejections_total{pool="echo-agent"} > 0')
                   and prometheus.instant("bindu_mesh_retries_total")
                   and prometheus.instant("bindu_mesh_http2_goaways_total"), 30, "Prometheus scraped the load")
        time.sleep(3)
        yield prometheus, start, time.time()
    finally:
        for item in reversed(stoppable):
            item.stop()


def dashboard_panels(panels):
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def escape_regex(value):
    """A label value as Grafana puts it in a regex matcher: regex metacharacters escaped, and the
    escapes doubled for the PromQL string."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def substitute(text, values):
    for name in sorted(values, key=len, reverse=True):
        text = text.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return text


def variable_values(dashboard, prometheus, start, end):
    """{name: value} for the dashboard's variables (see the comment above), and each query
    variable's label values."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": INTERVAL}
    found = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "datasource":
            assert variable["query"] == "prometheus"
            continue
        assert variable["type"] == "query", variable
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        assert variable["query"]["query"] == variable["definition"]
        selector, label = substitute(match.group(1), values), match.group(2)
        series = prometheus.api("series", **{"match[]": selector, "start": start, "end": end})
        found[variable["name"]] = sorted({s[label] for s in series if s.get(label)})
        assert found[variable["name"]], f"variable {variable['name']}: no values for {selector}"
        values[variable["name"]] = "(" + "|".join(escape_regex(v) for v in found[variable["name"]]) + ")"
    return values, found


def test_dashboard_panels_have_ids_and_places_of_their_own():
    dashboard = json.loads((MONITORING / "grafana" / "bindu-mesh.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = list(dashboard_panels(dashboard["panels"]))
    assert len({panel["id"] for panel in panels}) == len(panels)
    taken = set()
    for panel in panels:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        cells = {(place["x"] + dx, place["y"] + dy) for dx in range(place["w"]) for dy in range(place["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_every_dashboard_query_returns_series_from_a_scraped_mesh(scraped):
    prometheus, start, end = scraped
    dashboard = json.loads((MONITORING / "grafana" / "bindu-mesh.json").read_text())
    values, found = variable_values(dashboard, prometheus, start, end)
    assert found["pool"] == ["echo-agent", "tls-agent"]
    queries = []
    for panel in dashboard_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            queries.append((panel["title"], target["expr"]))
    assert len(queries) >= 20
    failures = []
    for title, expr in queries:
        query = substitute(expr, values)
        assert "$" not in query, f"{title}: a variable the test does not know in {expr}"
        status, body = http_get(f"http://127.0.0.1:{prometheus.port}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": query, "start": start, "end": end, "step": "2s"}))
        answer = json.loads(body)
        if status != 200 or answer["status"] != "success":
            failures.append(f"{title}: {query}\n  error: {answer.get('error')}")
            continue
        series = answer["data"]["result"]
        finite = [v for s in series for _, v in s["values"] if math.isfinite(float(v))]
        if not finite:
            failures.append(f"{title}: {query}\n  {len(series)} series, no finite value")
    assert not failures, "\n".join(failures)


def test_alert_rules_evaluate_on_the_metrics_of_a_scraped_mesh(scraped):
    prometheus, start, end = scraped
    rules = {rule["name"]: rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]}
    assert set(rules) == {rule["alert"] for rule in alert_rules()}
    assert {name: rule["health"] for name, rule in rules.items() if rule["health"] != "ok"} == {}
    # Every selector in a rule matches series the mesh exports: no misspelt name or label value.
    unmatched = []
    for rule in alert_rules():
        for match in re.finditer(r"\b(up|bindu_mesh_\w+|grpc_\w+)\b(\{[^}]*\})?", rule["expr"]):
            if not prometheus.api("series", **{"match[]": match.group(0), "start": start, "end": end}):
                unmatched.append(f"{rule['alert']}: {match.group(0)}")
    assert not unmatched, "\n".join(unmatched)
    # The listener's certificate ends in 7 days: that alert is on (pending: it has `for: 10m`);
    # the mesh is up, every pool has a healthy replica and the core knows the agent.
    active = prometheus.api("alerts")["alerts"]
    expiring = [a["labels"]["use"] for a in active if a["labels"]["alertname"] == "BinduMeshCertificateExpiringSoon"]
    assert expiring == ["callback:tls-agent"]
    quiet = {"BinduMeshDown", "BinduMeshPoolNoHealthyReplica", "BinduMeshCoreRegistrationLost"}
    assert [a["labels"] for a in active if a["labels"]["alertname"] in quiet] == []
