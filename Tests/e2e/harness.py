"""Processes for end-to-end tests: the real Bindu core, bindu-mesh, echo replicas, A2A calls.

Every process runs in its own temporary directory. The mesh binds port 0 and says which port it
got; the other processes bind ports picked free by the test.
"""
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("BINDU_MESH_BIN_DIR", ROOT / ".build" / "debug"))
BINDU = os.environ.get("BINDU_BIN", str(ROOT / ".venv" / "bin" / "bindu"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


class Process:
    """A child process whose output is collected line by line."""

    def __init__(self, args, cwd, env=None, name="proc"):
        self.name = name
        self.lines: list[str] = []
        self.stamps: list[float] = []  # time.monotonic() at which each line was read
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self.stamps.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, predicate, timeout=30.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and seen == len(self.lines)):
                    raise TimeoutError(f"{self.name}: no matching line; output:\n" + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.5))

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def count(self, predicate) -> int:
        with self._cond:
            return sum(1 for line in self.lines if predicate(line))

    def read_at(self, predicate):
        """When (time.monotonic()) the first matching line was read, or None."""
        with self._cond:
            return next((t for line, t in zip(self.lines, self.stamps) if predicate(line)), None)

    def send(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGKILL, timeout=10.0):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Core:
    """The real Bindu core: `bindu serve --grpc` in a working directory of its own."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.process = None

    def start(self):
        self.process = Process([BINDU, "serve", "--grpc", "--grpc-port", str(self.port)], cwd=self.workdir,
                               env={"GRPC__PORT": str(self.port), "GRPC__HOST": "127.0.0.1"}, name="core")
        wait_port(self.port, timeout=90, proc=self.process.proc)
        return self

    def stop(self):
        if self.process:
            self.process.stop()


def _listen_port(pool) -> int:
    """The port of a pool's listener, from `/pools`."""
    return int(pool["callback_listen"].rsplit(":", 1)[1])


class Mesh:
    """bindu-mesh started from a YAML config written for the test.

    `core_heartbeat=None` leaves `core.heartbeat_interval` at its default (30s). `start` again
    (or `restart`) runs a new process with the same config, ports and working directory, so it
    finds the state the last one kept; `previous` holds the processes that ran before.

    The registry and admin listeners, and the pools made by registration, listen on port 0: the
    mesh binds ports of the system's and writes the registry's and admin's to `listening.json` in
    its state folder. The first start reads them there; a later start (or take-over) first writes them into the
    config, so that it keeps them (before that, the file stays as the running mesh read it, and a
    reload of it changes nothing). `callback_port` is the port of the first pool made by
    registration; `pool_port(agent)`, any pool's.
    """

    def __init__(self, workdir: Path, core_port: int, extra_yaml: str = "", registry_yaml: str = "",
                 registry_port=None, core_host="127.0.0.1", core_yaml="", callbacks_yaml="", admin_yaml="",
                 core_heartbeat="1s", cores=None, first_port=0, env=None):
        self.workdir = workdir
        self.env = env
        self._registry_port = registry_port or 0
        self._admin_port = 0
        self._callback_port = None
        self.config_path = workdir / "bindu-mesh.yaml"
        heartbeat = f"  heartbeat_interval: {core_heartbeat}\n" if core_heartbeat else ""
        # `cores=[(port, agent_url or None), ...]`: the mesh registers with each core (`cores:`);
        # the other `core:` keys apply to all of them.
        core_lines = (f"core:\n  address: {core_host}:{core_port}\n" if not cores else "cores:\n" + "".join(
            f"  - address: {core_host}:{port}\n" + (f"    agent_url: {url}\n" if url else "") for port, url in cores)
            + "core:\n")
        self.config_path.write_text(
            f"{core_lines}{heartbeat}  retry_max_backoff: 1s\n{core_yaml}"
            f"registry:\n  listen: 127.0.0.1:{self._registry_port}\n{registry_yaml}"
            f"callbacks:\n  first_port: {first_port}\n{callbacks_yaml}"
            f"admin:\n  listen: 127.0.0.1:{self._admin_port}\n{admin_yaml}" + extra_yaml
        )
        self.process = None
        self.previous: list[Process] = []
        self.flags: tuple = ()

    def launch(self, *flags):
        """Runs the mesh without waiting for it (for a start that is expected to fail)."""
        if self.process is not None:
            assert self.process.proc.poll() is not None, "the mesh still runs: kill() or terminate() it first"
            self.previous.append(self.process)
        self.flags = flags
        self._pin_ports()
        self.process = Process([str(BIN_DIR / "bindu-mesh"), "--config", str(self.config_path), "--log-level", "debug", *flags],
                               cwd=self.workdir, env=self.env, name="mesh")
        return self.process

    @property
    def registry_port(self) -> int:
        assert self._registry_port, "the registry's port is known once the mesh has started"
        return self._registry_port

    @property
    def admin_port(self) -> int:
        assert self._admin_port, "the admin listener's port is known once the mesh has started"
        return self._admin_port

    @property
    def callback_port(self) -> int:
        """The callback port of the first pool made by registration (kept across restarts)."""
        if self._callback_port is None:
            wait_until(lambda: any(not p["declared"] for p in self.pools()), 30, "a pool made by registration")
            self._callback_port = _listen_port(next(p for p in self.pools() if not p["declared"]))
        return self._callback_port

    def pool_port(self, agent) -> int:
        """The port `agent`'s pool listens on."""
        pool = next((p for p in self.pools() if p["agent"] == agent), None)
        assert pool is not None, f"no pool {agent!r}"
        return _listen_port(pool)

    def start(self, *flags):
        self.launch(*flags)
        self._wait_ready(self.process)
        return self

    def state_dir(self) -> Path:
        """The mesh's state folder: `--state-dir`, else the config's `state.dir`, else
        `.bindu-mesh`, from its working directory."""
        flags = [str(flag) for flag in self.flags]
        for index, flag in enumerate(flags):
            if flag == "--state-dir" and index + 1 < len(flags):
                return self.workdir / flags[index + 1]
            if flag.startswith("--state-dir="):
                return self.workdir / flag.split("=", 1)[1]
        try:
            config = yaml.safe_load(self.config_path.read_text()) or {}
        except (OSError, yaml.YAMLError):  # the mesh reports a bad or missing file itself
            config = {}
        state = config.get("state") if isinstance(config, dict) else None
        folder = state.get("dir") if isinstance(state, dict) else None
        return self.workdir / (str(folder) if folder else ".bindu-mesh")

    def _wait_ready(self, process, timeout=30.0):
        """Until the registry and admin listeners serve; their ports from the `listening.json`
        this process writes in its state folder."""
        path = self.state_dir() / "listening.json"
        deadline = time.monotonic() + timeout
        while True:
            try:
                fields = json.loads(path.read_text())
            except (OSError, ValueError):  # not written yet (or a write replacing it)
                fields = {}
            if fields.get("pid") == process.proc.pid and {"registry", "admin"} <= fields.keys():
                break
            if process.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)  # the last lines of a mesh that exited
                raise RuntimeError(f"the mesh did not start (no {path} naming its pid, registry and admin); "
                                   f"it said:\n" + "\n".join(process.lines[-30:]))
            time.sleep(0.05)
        ports = {name: int(fields[name].rsplit(":", 1)[1]) for name in ("registry", "admin")}
        for name, attribute in (("registry", "_registry_port"), ("admin", "_admin_port")):
            known = getattr(self, attribute)
            assert known in (0, ports[name]), f"{name} moved from {known} to {ports[name]}"
            setattr(self, attribute, ports[name])

    def _pin_ports(self):
        """Writes the ports the last start bound into the config, where it asks for port 0."""
        config = self.config_path.read_text()
        for name, port in (("registry", self._registry_port), ("admin", self._admin_port)):
            if port:
                config = config.replace(f"{name}:\n  listen: 127.0.0.1:0\n", f"{name}:\n  listen: 127.0.0.1:{port}\n", 1)
        self.config_path.write_text(config)

    def restart(self):
        """Starts the mesh again with the flags of the last start."""
        return self.start(*self.flags)

    def take_over(self, timeout=60.0):
        """Starts a new process with `--take-over` while this one runs; returns the old process
        once it has exited (the new one is `process`, serving the same ports)."""
        old = self.process
        self.previous.append(old)
        self._pin_ports()
        self.process = Process([str(BIN_DIR / "bindu-mesh"), "--config", str(self.config_path), "--log-level", "debug",
                                *self.flags, "--take-over"], cwd=self.workdir, name="mesh")
        old.proc.wait(timeout)
        self._wait_ready(self.process)
        return old

    def kill(self):
        """SIGKILL, as a crash or an OOM kill; waits for the process to end."""
        self.process.stop(signal.SIGKILL)

    def terminate(self, timeout=60.0) -> int:
        """SIGTERM to the mesh alone (graceful shutdown); its exit code."""
        self.process.send(signal.SIGTERM)
        return self.process.proc.wait(timeout)

    def pools(self) -> list:
        """The admin listener's `/pools`."""
        wait_port(self.admin_port, timeout=30)
        status, body = http_get(f"http://127.0.0.1:{self.admin_port}/pools")
        assert status == 200, f"/pools answered {status}: {body}"
        return json.loads(body)

    def endpoint(self, address, agent=None):
        """The endpoint at `address` (`host:port`) in /pools (of `agent`'s pool), or None."""
        return next((e for p in self.pools() if agent in (None, p["agent"]) for e in p["endpoints"]
                     if e["address"] == address), None)

    def wait_registered(self, times=1, agent=None, timeout=60.0):
        """Until a core knows the pool (`agent`'s; else any) and the cores have accepted it `times`
        times in all since the mesh started (`core_registrations` in /pools: one more each time a
        restarted core is given it again)."""
        wait_until(lambda: any(p["registered_with_core"] and p["core_registrations"] >= times
                               for p in self.pools() if agent in (None, p["agent"])),
                   timeout, f"the pool registered with the cores {times} time(s)")

    def wait_in_rotation(self, count, timeout=15.0):
        """Until `count` endpoints are in rotation (a replica takes calls once its first probe
        has passed)."""
        wait_until(lambda: sum(e.get("in_rotation", False) for p in self.pools() for e in p["endpoints"]) >= count,
                   timeout, f"{count} endpoints in rotation")

    def stop(self):
        if self.process:
            self.process.stop(signal.SIGKILL)


class Replica:
    """The echo replica, registered through `core` (the mesh's registry) or serving alone."""

    def __init__(self, workdir: Path, name: str, core_port=None, agent_config=None, heartbeat=1.0, port=0,
                 extra_args=()):
        args = [str(BIN_DIR / "bindu-echo-replica"), "--name", name, "--listen", f"127.0.0.1:{port}",
                "--heartbeat-interval", str(heartbeat), *extra_args]
        if core_port is not None:
            args += ["--core", f"127.0.0.1:{core_port}"]
        if agent_config is not None:
            args += ["--agent-config", json.dumps(agent_config)]
        self.name = name
        self.process = Process(args, cwd=workdir, name=name)
        self.port = int(self.process.wait_line(lambda l: l.startswith("listening on")).rsplit(":", 1)[1])
        self.registration = None
        if core_port is not None:
            line = self.process.wait_line(lambda l: l.startswith("registered "), timeout=60)
            self.registration = json.loads(line[len("registered "):])

    def stop(self, sig=signal.SIGKILL):
        self.process.stop(sig)

    def calls(self):
        """How many calls this replica has run (needs --log-calls)."""
        return sum(1 for line in self.process.output().splitlines() if line.startswith("call "))


def stop_all(items):
    """Stops each of `items` (anything with stop()), newest first; one that fails does not keep the rest running."""
    for item in reversed(items):
        try:
            item.stop()
        except Exception:  # noqa: BLE001 - best effort in teardown
            pass


def wait_until(predicate, timeout, what):
    """Polls `predicate` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def agent_config(name="echo-agent", a2a_port=3773, **extra):
    config = {"author": "dev@example.com", "name": name, "description": "echo agent",
              "deployment": {"url": f"http://localhost:{a2a_port}", "expose": True}}
    config.update(extra)
    return config


def a2a_rpc(url, method, params, timeout=30):
    body = json.dumps({"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def a2a_ask(url, text, timeout=60.0):
    """Sends `message/send` and polls `tasks/get` until a terminal state: (state, artifact text).

    Waits first for the agent's HTTP server, which the core starts just after `RegisterAgent`.
    """
    wait_port(int(url.rstrip("/").rsplit(":", 1)[1]), timeout=60)
    params = {"message": {"role": "user", "parts": [{"kind": "text", "text": text}], "kind": "message",
                          "messageId": str(uuid.uuid4()), "contextId": str(uuid.uuid4()), "taskId": str(uuid.uuid4())},
              "configuration": {"acceptedOutputModes": ["application/json"]}}
    result = a2a_rpc(url, "message/send", params)
    task_id = result["result"]["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = a2a_rpc(url, "tasks/get", {"taskId": task_id})["result"]
        state = task["status"]["state"]
        if state in ("completed", "failed", "canceled", "rejected", "input-required", "auth-required"):
            texts = [p.get("text", "") for a in task.get("artifacts") or [] for p in a.get("parts", [])]
            return state, " ".join(texts)
        time.sleep(0.1)
    raise TimeoutError(f"task {task_id} did not finish within {timeout}s")


Outcome = collections.namedtuple("Outcome", "sent done state text")


class MessageFlow:
    """A2A messages sent back to back from background threads until `stop`; every outcome is kept
    with when it was sent and when it ended (time.monotonic()). An error (the core unreachable, ...)
    is an outcome with state "error"; the thread waits a little and goes on."""

    def __init__(self, url, threads=2, sleep_ms=200, timeout=30.0):
        self.url, self.sleep_ms, self.timeout = url, sleep_ms, timeout
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, n):
        i = 0
        while not self._stopping.is_set():
            i += 1
            sent = time.monotonic()
            try:
                state, text = a2a_ask(self.url, f"sleep:{self.sleep_ms} flow {n}.{i}", timeout=self.timeout)
            except Exception as error:  # noqa: BLE001 - an outcome like any other
                state, text = "error", f"{type(error).__name__}: {error}"
            with self._lock:
                self.outcomes.append(Outcome(sent, time.monotonic(), state, text))
            if state != "completed":
                self._stopping.wait(0.2)

    def completed(self, after=0.0) -> list:
        """Outcomes completed that ended after `after`."""
        with self._lock:
            return [o for o in self.outcomes if o.state == "completed" and o.done > after]

    def wait_completed(self, count, after=0.0, timeout=90.0) -> list:
        try:
            return wait_until(lambda: len(self.completed(after)) >= count and self.completed(after), timeout,
                              f"{count} messages completed")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; last outcomes: {self.outcomes[-5:]}") from None

    def summary(self) -> dict:
        with self._lock:
            return dict(collections.Counter(o.state for o in self.outcomes))

    def stop(self):
        self._stopping.set()
        for thread in self._threads:
            thread.join(self.timeout + 70)


def agent_card(url):
    wait_port(int(url.rstrip("/").rsplit(":", 1)[1]), timeout=60)
    with urllib.request.urlopen(url.rstrip("/") + "/.well-known/agent.json", timeout=10) as response:
        return json.loads(response.read())


def http_get(url, timeout=10):
    """(status, body text) of a GET, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(mesh):
    """The samples of the mesh's `/metrics`."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")
    assert status == 200
    samples = []
    for family in text_string_to_metric_families(text):
        samples.extend(family.samples)
    return samples


def value(samples, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def require_tool(name):
    """The path of a tool a test needs: a test without it is skipped on a developer's machine and
    fails in CI (where .ci/run installs it)."""
    import pytest
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (.ci/run installs it from Debian)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
