"""The status page in a real browser, `/status` and `bindu-mesh status`, against a mesh with the
real Bindu core and three registered replicas, one of them killed."""
import html.parser
import json
import subprocess

from harness import BIN_DIR, ROOT, a2a_ask, agent_config, free_port, http_get, require_tool, wait_until
from test_end_to_end import start_mesh, start_replicas

ARTIFACTS = ROOT / "test-artifacts"


class StatusPageRows(html.parser.HTMLParser):
    """The rows of the page's tables, as {attributes, cells}, from the DOM the browser rendered."""

    def __init__(self):
        super().__init__()
        self.rows, self.pools, self.text = [], [], []
        self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "data-pool" in attrs:
            self.pools.append(attrs["data-pool"])
        if tag == "tr":
            self._row = {"attrs": attrs, "cells": []}
        if tag == "td" and self._row is not None:
            self._row["cells"].append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None and self._row["cells"]:
            self._row["cells"][-1] += data


def browser(chromium, *args):
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--user-data-dir=" + str(ARTIFACTS / "chromium-profile"), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed: {done.stderr[-2000:]}"
    return done.stdout


def status_command(mesh, *args):
    return subprocess.run([str(BIN_DIR / "bindu-mesh"), "status", "--admin", f"127.0.0.1:{mesh.admin_port}", *args],
                          capture_output=True, text=True, timeout=30)


def test_status_page_and_command_show_the_pool_and_the_dead_replica_out_of_rotation(tmp_path, core, cleanup):
    chromium = require_tool("chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    mesh = start_mesh(tmp_path, core, cleanup)
    a2a_port = free_port()
    replicas = start_replicas(tmp_path, cleanup, 3, mesh.registry_port, agent_config(a2a_port=a2a_port))
    url = f"http://localhost:{a2a_port}/"
    for i in range(9):
        state, _ = a2a_ask(url, f"message {i}")
        assert state == "completed"
    def endpoints():
        return {e["address"]: e for e in mesh.pools()[0]["endpoints"]}

    address_of = {int(a.rsplit(":", 1)[1]): a for a in endpoints()}  # as the replicas gave them
    dead = replicas[1]
    dead.stop()
    dead_address = address_of[dead.port]
    live = {address_of[r.port] for r in replicas if r is not dead}

    wait_until(lambda: not endpoints()[dead_address]["in_rotation"], 30, "the killed replica out of rotation")

    # The page as a browser renders it, and a screenshot of it as a test artifact.
    page = f"http://127.0.0.1:{mesh.admin_port}/"
    dom = browser(chromium, "--dump-dom", page)
    (ARTIFACTS / "status-page.html").write_text(dom)
    browser(chromium, f"--screenshot={ARTIFACTS / 'status-page.png'}", "--window-size=1600,1000", page)
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000, "the screenshot is empty"
    rows = StatusPageRows()
    rows.feed(dom)
    assert rows.pools == ["echo-agent"]
    shown = {r["attrs"]["data-address"]: r for r in rows.rows if r["attrs"].get("class") == "endpoint"}
    assert set(shown) == live | {dead_address}, f"endpoints on the page: {sorted(shown)}"
    assert shown[dead_address]["attrs"]["data-in-rotation"] == "false"
    assert shown[dead_address]["attrs"]["data-state"] in ("unhealthy", "ejected")
    for address in live:
        assert shown[address]["attrs"]["data-in-rotation"] == "true"
        assert shown[address]["attrs"]["data-state"] == "healthy"
        # success, calls/s, p50 and p99 of the last minute: columns 5 to 8.
        success, rate, p50, p99 = shown[address]["cells"][5:9]
        assert success == "100.0 %", shown[address]["cells"]
        assert float(rate) > 0 and p50.endswith("ms") and p99.endswith("ms")
    cores = [r for r in rows.rows if "data-core" in r["attrs"]]
    assert [c["attrs"]["data-core"] for c in cores] == [f"127.0.0.1:{core.port}"]
    assert cores[0]["cells"][1] == "yes" and cores[0]["cells"][4].startswith("did:")
    events = " ".join(rows.text)
    assert "registered with the core" in events
    assert "replica out of rotation: health check failing" in events and dead_address in events
    assert "<script" not in dom and "http://" not in dom.split("<body>")[0].replace(page, ""), \
        "the page loads nothing from elsewhere"

    # /status says the same, with each live replica's calls of the last minute.
    status, body = http_get(f"http://127.0.0.1:{mesh.admin_port}/status")
    assert status == 200
    report = json.loads(body)
    by_address = {e["address"]: e for e in report["pools"][0]["endpoints"]}
    assert sum(by_address[a]["last_minute"]["calls"] for a in live) >= 6
    assert all(by_address[a]["last_minute"]["failures"] == 0 for a in live)
    assert report["pools"][0]["cores"][0]["registered_since"]

    # The status command: the same figures as a table, and the JSON as it is.
    table = status_command(mesh)
    assert table.returncode == 0, table.stderr
    print(table.stdout)
    lines = table.stdout.splitlines()
    assert any(line.startswith("POOL echo-agent") for line in lines)
    header = next(line for line in lines if line.strip().startswith("ENDPOINT")).split()
    endpoint_rows = {line.split()[0]: dict(zip(header, line.split())) for line in lines
                     if line.split() and line.split()[0] in live | {dead_address}}
    assert set(endpoint_rows) == live | {dead_address}
    assert endpoint_rows[dead_address]["ROTATION"] == "no"
    assert all(endpoint_rows[a]["ROTATION"] == "yes" and endpoint_rows[a]["SUCCESS"] == "100.00%" for a in live)
    as_json = status_command(mesh, "--json")
    assert as_json.returncode == 0
    assert {e["address"] for e in json.loads(as_json.stdout)["pools"][0]["endpoints"]} == live | {dead_address}


def test_status_command_names_an_unreachable_admin_listener():
    port = free_port()
    done = subprocess.run([str(BIN_DIR / "bindu-mesh"), "status", "--admin", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert f"cannot reach the mesh's admin listener at 127.0.0.1:{port}" in done.stderr


def test_status_lists_each_certificate_with_its_expiry(tmp_path, cleanup):
    import certs
    from harness import Mesh
    d = certs.dev(tmp_path / "certs", "--days", "30")
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, core_port=free_port(),
                registry_yaml=f"  tls:\n    cert: {d}/server.pem\n    key: {d}/server-key.pem\n    client_ca: {d}/ca.pem\n")
    cleanup.append(mesh)
    mesh.start()
    wait_until(lambda: http_get(f"http://127.0.0.1:{mesh.admin_port}/status")[0] == 200, 30, "the admin listener")
    report = json.loads(http_get(f"http://127.0.0.1:{mesh.admin_port}/status")[1])
    registry = [c for c in report["certificates"] if c["use"] == "registry"]
    assert len(registry) == 1, report["certificates"]
    assert 29 <= registry[0]["days_left"] <= 30.01
    status, page = http_get(f"http://127.0.0.1:{mesh.admin_port}/")
    assert status == 200 and 'data-use="registry"' in page
    table = status_command(mesh)
    assert table.returncode == 0 and any(line.split()[:1] == ["registry"] and line.split()[-1] in ("29", "30")
                                         for line in table.stdout.splitlines())


def test_the_process_figures_and_the_build_are_exported(tmp_path, cleanup):
    from harness import Mesh
    from prometheus_client.parser import text_string_to_metric_families
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, core_port=free_port())
    cleanup.append(mesh)
    mesh.start()
    wait_until(lambda: http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")[0] == 200, 30, "the admin listener")
    samples = {s.name: s for f in text_string_to_metric_families(http_get(
        f"http://127.0.0.1:{mesh.admin_port}/metrics")[1]) for s in f.samples}
    status = open(f"/proc/{mesh.process.proc.pid}/status").read()
    rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
    assert abs(samples["process_resident_memory_bytes"].value - rss) < 16 * 1024 * 1024
    assert samples["process_cpu_seconds_total"].value > 0
    assert 5 < samples["process_open_fds"].value < samples["process_max_fds"].value
    import time
    assert abs(samples["process_start_time_seconds"].value - time.time()) < 120
    assert samples["bindu_mesh_build_info"].labels["version"] and samples["bindu_mesh_build_info"].value == 1
