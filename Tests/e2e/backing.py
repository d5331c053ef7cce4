"""Bindu's scale-out backing services for end-to-end tests: Redis (the shared scheduler queue) and
PostgreSQL (the shared storage), each on a free port in a temporary directory of its own, owned by
the test and stopped by `.stop()` (append them to the `cleanup` fixture). Plus the helpers to start
several Bindu cores that serve one agent (`Cores`), the DID and schema names Bindu derives.

PostgreSQL refuses to run as root: as root (CI), initdb and the server run as the `postgres` user
(made by Debian's postgresql package; made here if missing) through `runuser`, in a temporary
directory owned by that user, with the unix socket in that directory. Clients connect over TCP
on 127.0.0.1 (trust authentication: a throw-away cluster on loopback).

Given a `host` (netns.py), a service runs in that host's namespace and listens on its address
instead; the test's own `psql` then reaches PostgreSQL over its unix socket (a path, which no
network namespace hides). `backing` is the pytest fixture: both services, started.
"""
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Core, Process, free_port

DB_NAME = "bindu"
DB_USER = "bindu"
DB_PASSWORD = "bindu"


def _missing(message):
    """Skips a test on a developer's machine, fails it in CI (where .ci/run installs the tool)."""
    import pytest
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_redis() -> str:
    found = shutil.which("redis-server")
    if found is None:
        _missing("redis-server is not installed (.ci/run installs Debian's redis-server)")
    return found


def postgres_bin_dir():
    """The newest /usr/lib/postgresql/<version>/bin with initdb, pg_ctl and postgres, or None."""
    candidates = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bin_dir = Path(initdb).parent
        version = bin_dir.parent.name
        if (bin_dir / "pg_ctl").exists() and (bin_dir / "postgres").exists():
            candidates.append((tuple(int(p) for p in version.split(".") if p.isdigit()), bin_dir))
    if not candidates:
        on_path = shutil.which("initdb")
        return Path(on_path).resolve().parent if on_path else None
    return max(candidates)[1]


def require_postgres() -> Path:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        _missing("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _missing("runuser (util-linux) is needed to run PostgreSQL as a non-root user")
    return bin_dir


def require_backing():
    """Both services; skips (or fails in CI) when either is missing."""
    require_redis()
    require_postgres()


def _spawn(host):
    """How a service's process starts: in `host` (netns.py) or here."""
    return host.spawn if host is not None else Process


class Redis:
    """redis-server on a free port of loopback (or of `host`'s address), no persistence, in a
    temporary directory."""

    def __init__(self, host=None):
        self.host = host
        self.address = host.address if host else "127.0.0.1"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bindu-redis-"))
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"

    def start(self):
        self.process = _spawn(self.host)(
            [require_redis(), "--port", str(self.port), "--bind", self.address, "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"],
            cwd=self.dir, name="redis")
        self.process.wait_line(lambda l: "Ready to accept connections" in l, timeout=30)
        return self

    def client(self):
        import redis
        return redis.Redis.from_url(self.url)

    def stop(self):
        if self.process:
            self.process.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres:
    """A throw-away PostgreSQL cluster on a free port of loopback (or of `host`'s address), with
    database and role `bindu`."""

    def __init__(self, host=None):
        self.host = host
        self.address = host.address if host else "127.0.0.1"
        self.bin = require_postgres()
        self.port = free_port()
        # mkdtemp's directory is mode 0700: as root, it is made in /tmp (which the server's user can
        # reach, whatever TMPDIR is) and given to that user.
        self.dir = Path(tempfile.mkdtemp(prefix="bindu-postgres-", dir="/tmp" if os.geteuid() == 0 else None))
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "socket"
        self.socket_dir.mkdir()
        self.run_as = None
        if os.geteuid() == 0:
            self.run_as = _postgres_user()
            uid, gid = self.run_as.pw_uid, self.run_as.pw_gid
            for path in (self.dir, self.socket_dir):
                os.chown(path, uid, gid)
        self.process = None

    def _as_user(self, args):
        if self.run_as is None:
            return [str(a) for a in args]
        return ["runuser", "-u", self.run_as.pw_name, "--", *[str(a) for a in args]]

    @property
    def url(self) -> str:
        """The URL for Bindu's `storage.postgres_url` (SQLAlchemy with asyncpg)."""
        return f"postgresql+asyncpg://{DB_USER}:{DB_PASSWORD}@{self.address}:{self.port}/{DB_NAME}"

    def start(self):
        subprocess.run(self._as_user([self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                                      "--encoding=UTF8", "--no-sync"]),
                       cwd=self.dir, check=True, capture_output=True, text=True)
        if self.host is not None:
            # Clients of the other hosts, on the host's network (initdb trusts loopback alone).
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all samenet trust\n")
        self.process = _spawn(self.host)(
            self._as_user([self.bin / "postgres", "-D", self.data, "-p", self.port, "-k", self.socket_dir,
                           "-c", f"listen_addresses={self.address}", "-c", "fsync=off", "-c", "max_connections=200",
                           "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
            cwd=self.dir, name="postgres")
        self.process.wait_line(lambda l: "ready to accept connections" in l, timeout=60)
        self.sql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
        self.sql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
        return self

    def sql(self, statement, database="postgres", user="postgres") -> str:
        """Runs one statement with psql (over TCP, or the unix socket for a server in a host); its
        unaligned, tuples-only output."""
        result = subprocess.run(
            [str(self.bin / "psql"), "-h", str(self.socket_dir) if self.host else self.address, "-p", str(self.port), "-U", user, "-d", database,
             "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", statement],
            check=False, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({statement}): {result.stderr}")
        return result.stdout.strip()

    def pin_search_path(self, schema: str):
        """Bindu's search_path workaround: make the DID's schema the database's default search_path,
        and create it (owned by Bindu's role) so that the default applies from the first connection.

        Bindu's PostgresStorage sets `search_path` in a SQLAlchemy "connect" listener, inside the
        transaction asyncpg's adapter opens; a first use of that connection that rolls back undoes
        the SET, and the tables then "do not exist" on that pooled connection."""
        self.sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}" AUTHORIZATION {DB_USER}', database=DB_NAME)
        self.sql(f'ALTER DATABASE {DB_NAME} SET search_path TO "{schema}", public')

    def pause(self):
        """Stops the server (fast shutdown), keeping its data: `resume()` starts it again on its port."""
        self.process.stop(signal.SIGINT, timeout=15)

    def resume(self):
        self.process = Process(self.process.proc.args, cwd=self.dir, name="postgres")
        self.process.wait_line(lambda l: "ready to accept connections" in l, timeout=60)

    def stop(self):
        if self.process:
            # SIGINT is PostgreSQL's fast shutdown; stop() sends it to the whole process group.
            self.process.stop(signal.SIGINT, timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)


def _fixture():
    import pytest

    @pytest.fixture
    def backing(cleanup):
        """Redis and PostgreSQL on loopback, started; stopped after the test."""
        require_backing()
        redis = Redis()
        cleanup.append(redis)
        postgres = Postgres()
        cleanup.append(postgres)
        return redis.start(), postgres.start()
    return backing


if "pytest" in sys.modules:
    backing = _fixture()


def _postgres_user():
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                       check=True, capture_output=True)
        return pwd.getpwnam("postgres")


# --- Bindu agent identity -------------------------------------------------------------------------

def agent_did(config) -> str:
    """The DID the core gives an agent, as Bindu derives it (bindu/penguin/bindufy.py
    `_generate_agent_id`, bindu/extensions/did/did_agent_extension.py `DIDAgentExtension.did`):
    `did:bindu:<author>:<name>:<agent id>`, the agent id being the config's `id` or the UUID of
    sha256("<author>:<name>")[:32]. It depends on the config only, not on the keys."""
    import hashlib
    import uuid

    def sanitize(value):
        return value.lower().replace(" ", "_").replace("@", "_at_").replace(".", "_")

    agent_id = config.get("id") or str(uuid.UUID(hashlib.sha256(f"{config['author']}:{config['name']}".encode())
                                                 .hexdigest()[:32]))
    return f"did:bindu:{sanitize(config['author'])}:{sanitize(config['name'])}:{agent_id}"


def schema_name(did: str) -> str:
    """The Postgres schema Bindu's storage uses for a DID (bindu/utils/schema_manager.py
    `sanitize_did_for_schema`)."""
    import hashlib
    import re
    candidate = re.sub(r"[^a-zA-Z0-9_]", "_", did.lower())
    if candidate and candidate[0].isdigit():
        candidate = f"schema_{candidate}"
    if len(candidate) > 63:
        candidate = f"{candidate[:54]}_{hashlib.sha256(candidate.encode()).hexdigest()[:8]}"
    return candidate


def scale_out_config(config, redis: Redis, postgres: Postgres):
    """An agent config with Bindu's shared Redis scheduler and Postgres storage."""
    return {**config, "scheduler": {"type": "redis", "redis_url": redis.url},
            "storage": {"type": "postgres", "postgres_url": postgres.url}}


def key_dir(core: Core, agent_name: str) -> Path:
    """Where a core keeps an agent's keys: `.bindu/agents/<name>/` of its working directory
    (bindu/grpc/service.py `RegisterAgent`)."""
    return core.workdir / ".bindu" / "agents" / agent_name


def share_keys(source: Core, cores, agent_name: str):
    """Copies the agent's key files made by `source` into the other cores' working directories, so
    that every core signs with the same key (the DID agrees anyway; the keys do not)."""
    origin = key_dir(source, agent_name)
    for core in cores:
        if core is not source:
            target = key_dir(core, agent_name)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(origin, target)


def public_key(core: Core, agent_name: str) -> bytes:
    found = sorted(key_dir(core, agent_name).rglob("public.pem"))
    return found[0].read_bytes() if found else b""


def make_keys(core: Core, agent_name: str):
    """Writes an agent's DID key pair where the core looks for it, before it registers the agent:
    `<key dir>/.bindu/private.pem` (PKCS#8, unencrypted) and `public.pem` (SubjectPublicKeyInfo),
    Ed25519, as `DIDAgentExtension.generate_and_save_key_pair` makes them
    (bindu/extensions/did/did_agent_extension.py); the core keeps existing files."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate()
    pki = key_dir(core, agent_name) / ".bindu"
    pki.mkdir(parents=True, exist_ok=True)
    private = pki / "private.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    (pki / "public.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                    serialization.PublicFormat.SubjectPublicKeyInfo))


class Cores:
    """Several Bindu cores, each in its own working directory with its own gRPC port; started in
    parallel (each takes seconds to import Bindu)."""

    def __init__(self, root: Path, count: int):
        self.cores = []
        for index in range(1, count + 1):
            workdir = root / f"core{index}"
            workdir.mkdir(parents=True, exist_ok=True)
            self.cores.append(Core(workdir))

    def start(self):
        import threading
        errors = []

        def run(core):
            try:
                core.start()
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(core,)) for core in self.cores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return self

    def share_keys(self, agent_name: str):
        """Makes the agent's keys in the first core's directory and copies them to the others,
        before any registration: one DID, one key pair on every core."""
        make_keys(self.cores[0], agent_name)
        share_keys(self.cores[0], self.cores, agent_name)

    def __iter__(self):
        return iter(self.cores)

    def __len__(self):
        return len(self.cores)

    def __getitem__(self, index):
        return self.cores[index]

    def stop(self):
        for core in self.cores:
            core.stop()

