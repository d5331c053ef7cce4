"""A real Arize Phoenix (PyPI's `arize-phoenix`, in a venv of its own: .venv-phoenix, which
scripts/test makes), started on free ports with a database of its own,
receiving OTLP over gRPC and HTTP, and read back through its REST API."""
import json
import subprocess
import urllib.parse
from pathlib import Path

from harness import ROOT, Process, free_port, http_get, require_tool, wait_until

PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"


class Phoenix:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.grpc_port = free_port()
        self.process = None

    def start(self, timeout=120.0):
        assert PHOENIX.exists(), "Phoenix is not installed: scripts/test installs it into .venv-phoenix"
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {"PHOENIX_WORKING_DIR": str(self.workdir), "PHOENIX_PORT": str(self.port),
               "PHOENIX_GRPC_PORT": str(self.grpc_port), "PHOENIX_HOST": "127.0.0.1",
               "PHOENIX_TELEMETRY_ENABLED": "false", "PHOENIX_ENABLE_AUTH": "false",
               "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false", "PHOENIX_LOG_MIGRATIONS": "false"}
        self.process = Process([str(PHOENIX), "serve"], cwd=self.workdir, env=env, name="phoenix")
        wait_until(lambda: self._ready(), timeout, "Phoenix ready (/readyz: its database answers)")
        return self

    def _ready(self):
        if self.process.proc.poll() is not None:
            raise RuntimeError("Phoenix exited:\n" + "\n".join(self.process.lines[-30:]))
        try:
            return http_get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    @property
    def otlp_grpc_endpoint(self):
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def otlp_http_endpoint(self):
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def _get(self, path):
        status, body = http_get(f"http://127.0.0.1:{self.port}{path}")
        assert status == 200, f"Phoenix answered {status} to {path}: {body[:500]}"
        return json.loads(body)

    def projects(self):
        """Project name -> Phoenix's id. A span's project is its resource's
        `openinference.project.name` (OTEL_RESOURCE_ATTRIBUTES), else `default`."""
        return {p["name"]: p["id"] for p in self._get("/v1/projects")["data"]}

    def spans(self, project="default"):
        """Every span of `project`: name, trace_id, span_id, parent_id, attributes, events,
        status_code (UNSET, OK, ERROR), status_message. Phoenix does not keep the OTLP span
        kind."""
        if project not in self.projects():
            return []
        spans, cursor = [], None
        while True:
            query = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = self._get(f"/v1/projects/{urllib.parse.quote(project)}/spans?{urllib.parse.urlencode(query)}")
            for span in page["data"]:
                spans.append({"name": span["name"], "trace_id": span["context"]["trace_id"],
                              "span_id": span["context"]["span_id"], "parent_id": span.get("parent_id"),
                              "attributes": span.get("attributes") or {}, "events": span.get("events") or [],
                              "status_code": span["status_code"], "status_message": span.get("status_message", "")})
            cursor = page.get("next_cursor")
            if not cursor:
                return spans

    def screenshot(self, path: Path, project, trace_id):
        """A PNG of Phoenix's page of one trace, rendered by headless Chromium."""
        chromium = require_tool("chromium")
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"http://127.0.0.1:{self.port}/projects/{self.projects()[project]}/traces/{trace_id}"
        done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--no-first-run", f"--user-data-dir={self.workdir / 'chromium-profile'}",
                               "--hide-scrollbars", "--window-size=1400,800", "--virtual-time-budget=15000",
                               f"--screenshot={path}", url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and path.exists(), f"chromium failed: {done.stderr[-2000:]}"
        return url

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None
