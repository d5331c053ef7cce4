"""A real Arize Phoenix as the trace backend of end-to-end tests.

`Phoenix(workdir).start()` runs `python -m phoenix.server.main serve` on free ports, with its
SQLite database in `workdir` (a temporary directory when none is given), and waits for `/readyz`.
Spans are read back through Phoenix's REST API (`GET /v1/projects/{project}/spans`); a trace is
photographed in Phoenix's UI with headless Chromium.

Phoenix keeps neither a span's OpenTelemetry kind (its `span_kind` is OpenInference's: LLM,
CHAIN, ..., UNKNOWN) nor the resource's attributes (it reads `openinference.project.name` from
them to pick the project, else "default"). So by default the OTLP endpoints given to the mesh are
a tap's: a gRPC and an HTTP listener in this process that note each span's kind and resource and
pass the request through, unchanged, to Phoenix's own gRPC port and `/v1/traces`, answering with
Phoenix's answer. `spans()` lists what Phoenix stored, with `kind` and `resource` from the tap.
With `tap=False` the endpoints are Phoenix's own, and `kind` is None and `resource` empty.

The Phoenix server runs with the Python of PHOENIX_E2E_PYTHON (default: the project's .venv).
"""
import gzip
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness import ROOT, Process, free_port, http_get, require_tool, wait_port, wait_until

PYTHON = os.environ.get("PHOENIX_E2E_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Phoenix:
    def __init__(self, workdir=None, tap=True, ready_timeout=180.0):
        self.workdir = Path(workdir) if workdir else None
        self.tap = tap
        self.ready_timeout = ready_timeout
        self.process = None
        self.http_port = self.grpc_port = None
        self.startup_seconds = None
        self._tap = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self):
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="phoenix-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port = free_port(), free_port()
        env = {
            "PHOENIX_HOST": "127.0.0.1",  # the HTTP listener; gRPC always binds [::]
            "PHOENIX_PORT": str(self.http_port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.workdir),
            "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{self.workdir / 'phoenix.db'}",
            "PHOENIX_ENABLE_AUTH": "false",
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",  # no web fonts, pixels or downloads
            "PHOENIX_LOG_MIGRATIONS": "false",  # else every CREATE TABLE is logged
        }
        began = time.monotonic()
        self.process = Process([PYTHON, "-m", "phoenix.server.main", "serve"], cwd=self.workdir, env=env,
                               name="phoenix")
        try:
            wait_until(lambda: self._ready(), self.ready_timeout, "Phoenix's /readyz")
            wait_port(self.grpc_port, timeout=30, proc=self.process.proc)
        except Exception as error:
            self.stop()
            raise RuntimeError(f"Phoenix did not start: {error}\n" + "\n".join(self.process.lines[-30:])) from None
        self.startup_seconds = time.monotonic() - began
        if self.tap:
            self._tap = _Tap(self.grpc_port, self.url)
        return self

    def _ready(self):
        if self.process.proc.poll() is not None:
            raise RuntimeError(f"Phoenix exited with {self.process.proc.returncode}")
        try:
            return http_get(f"{self.url}/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self):
        """The tap's listeners close first, then Phoenix ends (SIGTERM, SIGKILL after 10 s)."""
        if self._tap:
            self._tap.stop()
            self._tap = None
        if self.process:
            self.process.stop(signal.SIGTERM, timeout=10)

    # -- where to send, where to look ----------------------------------------------------------

    @property
    def url(self) -> str:
        """Phoenix's UI and REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._tap.grpc_port if self._tap else self.grpc_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        """The base URL; OTLP/HTTP exporters post to `{this}/v1/traces`."""
        return f"http://127.0.0.1:{self._tap.http_port}" if self._tap else self.url

    # -- reading spans back --------------------------------------------------------------------

    def spans(self, project="default") -> list:
        """Every span Phoenix has stored in `project`, oldest first, as dicts: name, kind, trace_id,
        span_id, parent_id, attributes (flat), events, status_code, status_message, start_time,
        end_time, resource. A project that does not exist (yet) has none."""
        rows, cursor = [], None
        while True:
            query = {"limit": 1000, "sort": "id", "order": "asc", **({"cursor": cursor} if cursor else {})}
            status, body = http_get(f"{self.url}/v1/projects/{urllib.parse.quote(project, safe='')}/spans?"
                                    + urllib.parse.urlencode(query))
            if status == 404:
                return []
            assert status == 200, f"Phoenix answered {status}: {body[:500]}"
            page = json.loads(body)
            rows += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        noted = self._tap.noted() if self._tap else {}
        spans = []
        for row in rows:
            trace_id, span_id = row["context"]["trace_id"], row["context"]["span_id"]
            kind, resource = noted.get((trace_id, span_id), (None, {}))
            spans.append({
                "name": row["name"], "kind": kind, "trace_id": trace_id, "span_id": span_id,
                "parent_id": row.get("parent_id"), "attributes": row.get("attributes") or {},
                "events": [{"name": e.get("name"), "timestamp": e.get("timestamp"),
                            "attributes": e.get("attributes") or {}} for e in row.get("events") or []],
                "status_code": row.get("status_code"), "status_message": row.get("status_message") or "",
                "start_time": row.get("start_time"), "end_time": row.get("end_time"), "resource": resource,
            })
        return spans

    def wait_for_spans(self, predicate, timeout=30.0, project="default") -> list:
        """Polls `spans(project)` until `predicate(spans)` is true; returns those spans."""
        found = []

        def check():
            found[:] = self.spans(project)
            return bool(predicate(found))
        try:
            wait_until(check, timeout, "spans in Phoenix")
        except TimeoutError:
            raise TimeoutError(f"not within {timeout}s: spans in Phoenix matching; it has "
                               f"{[(s['name'], s['kind'], s['trace_id']) for s in found][-20:]}") from None
        return found

    # -- the UI --------------------------------------------------------------------------------

    def screenshot(self, path, trace_id=None, project="default", size=(1400, 900), timeout=120.0) -> Path:
        """A PNG of Phoenix's UI by headless Chromium: the trace `trace_id` (its spans' tree and the
        root span's attributes) once Phoenix has it, or else the project's traces."""
        chromium = require_tool("chromium")
        if trace_id:
            self.wait_for_spans(lambda spans: any(s["trace_id"] == trace_id for s in spans), 30, project)
            page = f"{self.url}/redirects/traces/{trace_id}"
        else:
            page = f"{self.url}/redirects/projects/{urllib.parse.quote(project, safe='')}"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        profile = tempfile.mkdtemp(prefix="chromium-", dir=self.workdir)
        try:
            result = subprocess.run(
                [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                 "--virtual-time-budget=10000", f"--screenshot={path}", page],
                capture_output=True, text=True, timeout=timeout)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        assert path.exists() and path.stat().st_size > 0, f"chromium wrote no screenshot:\n{result.stderr[-2000:]}"
        return path


class _Tap:
    """OTLP in over gRPC and HTTP, the same bytes on to Phoenix; notes each span's kind and resource."""

    def __init__(self, phoenix_grpc_port, phoenix_url):
        import grpc
        self._grpc = grpc
        self._lock = threading.Lock()
        self._noted = {}
        self._phoenix_url = phoenix_url
        self._channel = grpc.insecure_channel(f"127.0.0.1:{phoenix_grpc_port}")
        self._export = self._channel.unary_unary(EXPORT)  # raw bytes both ways
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_export)})])
        self.grpc_port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._connections = set()
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def noted(self) -> dict:
        with self._lock:
            return dict(self._noted)

    def note(self, body: bytes):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.trace.v1.trace_pb2 import Span
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except Exception:  # noqa: BLE001 - Phoenix answers what it makes of it
            return
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        kind = Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_")
                        self._noted[(span.trace_id.hex(), span.span_id.hex())] = (kind, resource)

    def _grpc_export(self, body, context):
        self.note(body)
        skip = {"content-type", "te", "user-agent", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout"}
        metadata = [(k, v) for k, v in context.invocation_metadata() if not k.startswith(":") and k not in skip]
        try:
            return self._export(body, timeout=max(1.0, min(context.time_remaining() or 30.0, 30.0)),
                                metadata=metadata)
        except self._grpc.RpcError as error:
            context.abort(error.code(), error.details() or "")

    def stop(self):
        self._server.stop(0)
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # kept-alive connections would go on being served
            try:
                connection.shutdown(2)
            except OSError:
                pass
        self._channel.close()


def _handler(tap):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            with tap._lock:
                tap._connections.add(self.connection)

        def finish(self):
            with tap._lock:
                tap._connections.discard(self.connection)
            super().finish()

        def log_message(self, *args):
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self):
            body = self._body()
            if urllib.parse.urlsplit(self.path).path != "/v1/traces":
                return self._answer(404, b"not found", "text/plain")
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if "protobuf" in (self.headers.get("Content-Type") or ""):
                try:
                    tap.note(gzip.decompress(body) if encoding == "gzip"
                             else zlib.decompress(body) if encoding == "deflate" else body)
                except (OSError, zlib.error):
                    pass
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("content-type", "content-encoding", "x-project-name", "authorization")}
            request = urllib.request.Request(tap._phoenix_url + self.path, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    self._answer(response.status, response.read(), response.headers.get("Content-Type"))
            except urllib.error.HTTPError as error:
                self._answer(error.code, error.read(), error.headers.get("Content-Type"))
            except OSError as error:
                self._answer(503, f"Phoenix unreachable: {error}".encode(), "text/plain")

        def _answer(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _value(any_value):
    which = any_value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, which) if which else None
