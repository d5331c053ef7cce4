"""mTLS over real handshakes: core -> mesh, mesh -> replica, registry, mesh -> mesh, rotation."""
import importlib
import shutil
import signal
import socket
import ssl
import threading
import time

import grpc
import pytest

import certs
from faults import stubs
from harness import Mesh, Replica, a2a_ask, agent_config, free_port, wait_until


def listener_tls(d, auth="required", allowed=None):
    text = f"    listener_tls:\n      cert: {d}/server.pem\n      key: {d}/server-key.pem\n"
    if auth != "none":
        text += f"      client_ca: {d}/ca.pem\n      client_auth: {auth}\n"
    if allowed:
        text += "      allowed_identities: [" + ", ".join(f'"{a}"' for a in allowed) + "]\n"
    return text


def tls_pool(replicas, extra=""):
    """The pool `echo-agent` on a port of the system's (`mesh.pool_port("echo-agent")`)."""
    return ("pools:\n  - agent: echo-agent\n    replicas:\n"
            + "".join(f"      - 127.0.0.1:{r.port}\n" for r in replicas) + extra)


def secure_stub(port, d, client="client"):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.pem").read_bytes(),
        private_key=(d / f"{client}-key.pem").read_bytes() if client else None,
        certificate_chain=(d / f"{client}.pem").read_bytes() if client else None)
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    return stubs()[1].AgentHandlerStub(channel), channel


def ask(stub, text="hello", timeout=5):
    """One call; while the pool's replicas still wait for their first passing probe (a TLS
    handshake each, slow on a loaded machine), the call is made again, for up to 15 s."""
    messages = stubs()[0]
    deadline = time.monotonic() + 15
    while True:
        try:
            return stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content=text)]),
                                       timeout=timeout).content
        except grpc.RpcError as error:
            if "pending" not in (error.details() or "") or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def d(tmp_path):
    return certs.dev(tmp_path / "certs")


@pytest.fixture
def replica(tmp_path, cleanup):
    replica = Replica(tmp_path, "r1")
    cleanup.append(replica)
    return replica


def start(tmp_path, cleanup, yaml, **sections):
    workdir = tmp_path / f"mesh{len(cleanup)}"
    workdir.mkdir()
    mesh = Mesh(workdir, core_port=free_port(), extra_yaml=yaml, **sections)
    cleanup.append(mesh)
    return mesh.start()


def test_grpcio_client_with_client_certificate_reaches_the_pool(tmp_path, cleanup, pb, d, replica):
    mesh = start(tmp_path, cleanup, tls_pool([replica], listener_tls(d)))
    port = mesh.pool_port("echo-agent")
    stub, channel = secure_stub(port, d)
    assert ask(stub) == "[r1] hello"
    channel.close()


@pytest.mark.parametrize("case", ["no client certificate", "another CA", "expired", "identity not allowed", "plaintext"])
def test_listener_refuses_bad_clients_with_a_log_line(tmp_path, cleanup, pb, d, replica, case):
    allowed = ["spiffe://bindu-mesh/someone-else"] if case == "identity not allowed" else None
    mesh = start(tmp_path, cleanup, tls_pool([replica], listener_tls(d, allowed=allowed)))
    port = mesh.pool_port("echo-agent")
    if case == "no client certificate":
        stub, channel = secure_stub(port, d, client=None)
    elif case == "another CA":
        certs.client_from_other_ca(d)
        stub, channel = secure_stub(port, d, client="other-client")
    elif case == "expired":
        certs.expired_client(d)
        stub, channel = secure_stub(port, d, client="expired-client")
    elif case == "identity not allowed":
        stub, channel = secure_stub(port, d)
    else:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = stubs()[1].AgentHandlerStub(channel)
    with pytest.raises(grpc.RpcError) as failure:
        ask(stub, timeout=3)
    assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    expected = "names no allowed identity" if allowed else "TLS handshake with caller failed"
    mesh.process.wait_line(lambda l: expected in l, timeout=5)
    assert mesh.process.proc.poll() is None
    channel.close()


def tls_only_replica(tmp_path, cleanup, d):
    """A replica that speaks only TLS and requires a client certificate of the dev CA. Its
    certificate names only "localhost" (no IP SAN), as one issued for a host name."""
    named = tmp_path / "named"
    shutil.copytree(d, named)
    certs.dev(named, "--hosts", "localhost")
    secure = Replica(tmp_path, "tls-r1", extra_args=["--tls-cert", str(named / "server.pem"), "--tls-key",
                                                      str(named / "server-key.pem"), "--tls-client-ca", str(d / "ca.pem")])
    cleanup.append(secure)
    return secure


def test_mesh_reaches_a_replica_that_requires_client_certificates(tmp_path, cleanup, pb, d):
    secure = tls_only_replica(tmp_path, cleanup, d)
    upstream = f"    upstream_tls:\n      ca: {d}/ca.pem\n      cert: {d}/client.pem\n      key: {d}/client-key.pem\n"
    yaml = tls_pool([secure], upstream + "      server_name: localhost\n") + (
        f"  - agent: misnamed-agent\n    replicas: [127.0.0.1:{secure.port}]\n"
        + upstream + "      server_name: wrong.example\n")
    mesh = start(tmp_path, cleanup, yaml)
    port, wrong_port = mesh.pool_port("echo-agent"), mesh.pool_port("misnamed-agent")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    assert ask(stubs()[1].AgentHandlerStub(channel)) == "[tls-r1] hello"
    # The same replica checked against a name its certificate does not carry: refused.
    bad = grpc.insecure_channel(f"127.0.0.1:{wrong_port}")
    with pytest.raises(grpc.RpcError) as failure:
        ask(stubs()[1].AgentHandlerStub(bad), timeout=3)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    mesh.process.wait_line(lambda l: "TLS handshake with replica failed" in l, timeout=5)


def test_registry_serves_mtls(tmp_path, cleanup, pb, d):
    registry_tls = (f"registry:\n  tls:\n    cert: {d}/server.pem\n    key: {d}/server-key.pem\n"
                    f"    client_ca: {d}/ca.pem\n")
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, core_port=free_port(), registry_yaml=registry_tls.split("registry:\n", 1)[1])
    cleanup.append(mesh)
    mesh.start()
    messages, services = stubs()
    credentials = grpc.ssl_channel_credentials((d / "ca.pem").read_bytes(), (d / "client-key.pem").read_bytes(),
                                               (d / "client.pem").read_bytes())
    with grpc.secure_channel(f"localhost:{mesh.registry_port}", credentials) as channel:
        answer = services.BinduServiceStub(channel).RegisterAgent(
            messages.RegisterAgentRequest(config_json="{}", grpc_callback_address="localhost:1"), timeout=5)
        assert not answer.success and '"name"' in answer.error
    with grpc.secure_channel(f"localhost:{mesh.registry_port}", grpc.ssl_channel_credentials((d / "ca.pem").read_bytes())) as channel:
        with pytest.raises(grpc.RpcError):
            services.BinduServiceStub(channel).Heartbeat(messages.HeartbeatRequest(agent_id="x"), timeout=3)


def served_serial(port, d):
    context = ssl.create_default_context(cafile=str(d / "ca.pem"))
    context.load_cert_chain(str(d / "client.pem"), str(d / "client-key.pem"))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return certs.serial_of(tls.getpeercert(binary_form=True))


def test_certificates_reload_without_restart_and_a_broken_file_is_refused(tmp_path, cleanup, pb, d, replica):
    mesh = start(tmp_path, cleanup, tls_pool([replica], listener_tls(d)), admin_yaml="  tls_reload_interval: 200ms\n")
    port = mesh.pool_port("echo-agent")
    first = served_serial(port, d)
    assert first == certs.serial_of((d / "server.pem").read_bytes())

    stub, channel = secure_stub(port, d)
    slow = {}
    thread = threading.Thread(target=lambda: slow.setdefault("answer", ask(stub, "sleep:1500 slow", timeout=10)))
    thread.start()
    time.sleep(0.3)
    rotated = tmp_path / "rotated"
    shutil.copytree(d, rotated)
    certs.dev(rotated)  # same CA, new server and client certificates
    shutil.copy(rotated / "server-key.pem", d / "server-key.pem")
    shutil.copy(rotated / "server.pem", d / "server.pem")
    mesh.process.wait_line(lambda l: "TLS files reloaded" in l, timeout=10)
    second = served_serial(port, d)
    assert second == certs.serial_of((rotated / "server.pem").read_bytes()) != first
    thread.join(10)
    assert slow.get("answer") == "[r1] slow", "the call in flight on the old connection was not failed"

    (d / "server.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    mesh.process.wait_line(lambda l: "cannot be used; the previous certificate stays in use" in l, timeout=10)
    assert served_serial(port, d) == second
    assert mesh.process.proc.poll() is None
    channel.close()


def test_meshes_compose_over_mtls_between_core_and_replicas(tmp_path, core, cleanup, pb, d):
    """core -> mesh A ==mTLS==> mesh B -> replica; mesh B registers with mesh A over mTLS."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    client = f"    ca: {d}/ca.pem\n    cert: {d}/client.pem\n    key: {d}/client-key.pem\n"
    server = f"    cert: {d}/server.pem\n    key: {d}/server-key.pem\n    client_ca: {d}/ca.pem\n"
    mesh_a = Mesh(a_dir, core.port, registry_yaml="  tls:\n" + server, callbacks_yaml="  upstream_tls:\n" + client)
    cleanup.append(mesh_a)
    mesh_a.start()
    mesh_b = Mesh(b_dir, mesh_a.registry_port, core_host="localhost", core_yaml="  tls:\n" + client,
                  callbacks_yaml="  tls:\n" + server)
    cleanup.append(mesh_b)
    mesh_b.start()
    a2a_port = free_port()
    replica = Replica(tmp_path, "r1", core_port=mesh_b.registry_port, agent_config=agent_config(a2a_port=a2a_port))
    cleanup.append(replica)
    assert replica.registration["success"], replica.registration
    state, text = a2a_ask(f"http://localhost:{a2a_port}/", "through two meshes")
    assert state == "completed" and text == "[r1] through two meshes"


def rotate_server_certificate(tmp_path, d):
    """Issues a new server certificate from the same CA into `d`; returns where it was made."""
    rotated = tmp_path / "rotated"
    shutil.copytree(d, rotated)
    certs.dev(rotated)
    shutil.copy(rotated / "server-key.pem", d / "server-key.pem")
    shutil.copy(rotated / "server.pem", d / "server.pem")
    return rotated


def test_sighup_reloads_at_once_and_expiry_is_exported(tmp_path, cleanup, pb, d, replica):
    import signal
    from harness import http_get
    mesh = start(tmp_path, cleanup, tls_pool([replica], listener_tls(d)), admin_yaml="  tls_reload_interval: 1h\n")
    port = mesh.pool_port("echo-agent")
    first = served_serial(port, d)
    rotated = rotate_server_certificate(tmp_path, d)
    time.sleep(0.5)
    assert served_serial(port, d) == first, "no reload before the interval or a signal"
    mesh.process.send(signal.SIGHUP)
    mesh.process.wait_line(lambda l: "TLS files reloaded" in l, timeout=10)
    assert served_serial(port, d) == certs.serial_of((rotated / "server.pem").read_bytes())
    status, text = http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")
    assert 'bindu_mesh_certificate_expiry_timestamp_seconds{use="callback:echo-agent"}' in text


def test_sighup_reloads_the_registry_certificate_and_its_expiry_is_exported(tmp_path, cleanup, pb, d):
    import signal
    from harness import http_get
    registry_tls = f"  tls:\n    cert: {d}/server.pem\n    key: {d}/server-key.pem\n    client_ca: {d}/ca.pem\n"
    workdir = tmp_path / "mesh"
    workdir.mkdir()
    mesh = Mesh(workdir, core_port=free_port(), registry_yaml=registry_tls, admin_yaml="  tls_reload_interval: 1h\n")
    cleanup.append(mesh)
    mesh.start()
    first = served_serial(mesh.registry_port, d)
    rotated = rotate_server_certificate(tmp_path, d)
    time.sleep(0.5)
    assert served_serial(mesh.registry_port, d) == first, "no reload before the interval or a signal"
    mesh.process.send(signal.SIGHUP)
    mesh.process.wait_line(lambda l: "TLS files reloaded" in l and "server.pem" in l, timeout=10)
    assert served_serial(mesh.registry_port, d) == certs.serial_of((rotated / "server.pem").read_bytes())
    status, text = http_get(f"http://127.0.0.1:{mesh.admin_port}/metrics")
    assert 'bindu_mesh_certificate_expiry_timestamp_seconds{use="registry"}' in text


def test_a_reload_puts_tls_on_a_listener_for_the_connections_it_accepts_from_then_on(tmp_path, cleanup, pb, d, replica):
    mesh = start(tmp_path, cleanup, tls_pool([replica]))
    port = mesh.pool_port("echo-agent")
    messages = stubs()[0]
    plain = grpc.insecure_channel(f"127.0.0.1:{port}")
    plain_stub = stubs()[1].AgentHandlerStub(plain)
    assert ask(plain_stub, "before") == "[r1] before"

    mesh.config_path.write_text(mesh.config_path.read_text() + listener_tls(d))
    mesh.process.send(signal.SIGHUP)
    wait_until(lambda: "pool listener TLS reloaded" in mesh.process.output(), 15, "the reload")
    # A new connection must speak TLS with a client certificate; the connection open goes on.
    stub, channel = secure_stub(port, d)
    assert ask(stub, "with tls") == "[r1] with tls"
    assert ask(plain_stub, "still plain") == "[r1] still plain"
    # (a subchannel pool of its own: grpcio would otherwise reuse the connection open above)
    fresh = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
    with pytest.raises(grpc.RpcError):
        stubs()[1].AgentHandlerStub(fresh).HandleMessages(
            messages.HandleRequest(messages=[messages.ChatMessage(content="plain again")]), timeout=3)
    for c in (plain, channel, fresh):
        c.close()


def test_a_reload_turns_on_tls_to_the_replicas_without_a_restart(tmp_path, cleanup, pb, d):
    secure = tls_only_replica(tmp_path, cleanup, d)
    mesh = start(tmp_path, cleanup, tls_pool([secure]))
    port = mesh.pool_port("echo-agent")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = stubs()[1].AgentHandlerStub(channel)
    # Plaintext to a replica that speaks only TLS: its probes fail, no call gets through.
    with pytest.raises(grpc.RpcError) as failure:
        ask(stub, timeout=3)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE

    upstream = (f"    upstream_tls:\n      ca: {d}/ca.pem\n      cert: {d}/client.pem\n      key: {d}/client-key.pem\n"
                "      server_name: localhost\n")
    mesh.config_path.write_text(mesh.config_path.read_text() + upstream)
    mesh.process.send(signal.SIGHUP)
    wait_until(lambda: "pool upstream TLS reloaded" in mesh.process.output(), 15, "the reload")

    def answers():
        try:
            return ask(stub, timeout=3) == "[tls-r1] hello"
        except grpc.RpcError:
            return False
    wait_until(answers, 20, "calls reach the replica over mTLS")
    channel.close()
