"""What a caller may send the callback listener: requests checked against RFC 9113 §8.2-8.3 before
they are forwarded, a budget of stream errors, the callers' own stream limit, and the preface and
idle timeouts of their connections. A legitimate client works throughout."""
import socket
import time

import hpack
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame

from faults import Scenario
from test_http2 import PREFACE, PROTOCOL_ERROR, ENHANCE_YOUR_CALM, answer_text, closed, grpc_body, read_frames, \
    request_headers
from harness import scrape, value

REFUSED_STREAM = 0x7


def ends(sock):
    """Whether the mesh closes `sock` within its timeout, whatever it writes first (its SETTINGS)."""
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
CALLBACKS = "  max_concurrent_streams: 3\n  preface_timeout: 1s\n  idle_timeout: 2s\n  stalled_window_timeout: 2s\n"


@pytest.fixture
def scenario(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, policy_yaml="health:\n  interval: 60s\n  timeout: 1s\n",
                        callbacks_yaml=CALLBACKS)
    yield scenario
    scenario.stop()


def malformed(scenario):
    """One header list per kind of malformed request, named."""
    good = request_headers(scenario)

    def without(name):
        return [h for h in good if h[0] != name]

    def replaced(name, value):
        return [(n, value if n == name else v) for n, v in good]

    return {
        "connection-specific field": good + [("connection", "keep-alive")],
        "transfer-encoding": good + [("transfer-encoding", "chunked")],
        "te other than trailers": replaced("te", "gzip"),
        "uppercase name": good + [("X-Upper", "1")],
        "empty name": good + [("", "x")],
        "CRLF in a value": good + [("x-injected", "a\r\nx-evil: 1")],
        "unknown pseudo-header": good + [(":protocol", "websocket")],
        "pseudo-header after a regular field": [("x-first", "1")] + good,
        "bad content-length": good + [("content-length", "12abc")],
        "no :path": without(":path"),
        "no :scheme": without(":scheme"),
    }


def test_malformed_requests_are_refused_on_their_stream_and_never_reach_the_replica(scenario):
    replica = scenario.replicas[0]
    kinds = malformed(scenario)
    encoder = hpack.Encoder()
    stream_ids = {}
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        frames = [PREFACE + SettingsFrame(0).serialize()]
        for index, (kind, headers) in enumerate(kinds.items()):
            stream = 1 + 2 * index
            stream_ids[stream] = kind
            frames.append(HeadersFrame(stream, data=encoder.encode(headers), flags=["END_HEADERS"]).serialize())
            frames.append(DataFrame(stream, data=grpc_body(scenario, kind), flags=["END_STREAM"]).serialize())
        good = 1 + 2 * len(kinds)
        frames.append(HeadersFrame(good, data=encoder.encode(request_headers(scenario)), flags=["END_HEADERS"]).serialize())
        frames.append(DataFrame(good, data=grpc_body(scenario, "after them"), flags=["END_STREAM"]).serialize())
        sock.sendall(b"".join(frames))
        got = read_frames(sock, lambda f: isinstance(f, HeadersFrame) and f.stream_id == good and "END_STREAM" in f.flags)
    resets = {f.stream_id: f.error_code for f in got if isinstance(f, RstStreamFrame)}
    for stream, kind in stream_ids.items():
        assert resets.get(stream) == PROTOCOL_ERROR, f"{kind}: {resets.get(stream)}"
    assert not [f for f in got if isinstance(f, GoAwayFrame)], "the connection goes on"
    body = b"".join(f.data for f in got if isinstance(f, DataFrame) and f.stream_id == good)
    assert answer_text(scenario, body) == "[r1] after them"
    time.sleep(0.3)
    reached = [line for line in replica.process.output().splitlines() if line.startswith("call ")]
    assert "call after them" in reached
    assert not [line for line in reached if line[len("call "):] in kinds], "a malformed request reached the replica"
    samples = scrape(scenario.mesh)
    assert value(samples, "bindu_mesh_http2_refused_requests_total", pool="echo-agent") == len(kinds)
    assert scenario.mesh.process.output().count("caller's request refused") == 1, "logged once per connection"
    assert scenario.ask("still fine") == "[r1] still fine"


def test_a_flood_of_stream_errors_ends_the_connection_and_no_other(scenario):
    encoder = hpack.Encoder()
    bad = request_headers(scenario, connection="close")
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + b"".join(
            HeadersFrame(1 + 2 * i, data=encoder.encode(bad), flags=["END_HEADERS", "END_STREAM"]).serialize()
            for i in range(250)))
        got = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
        assert isinstance(got[-1], GoAwayFrame) and got[-1].error_code == ENHANCE_YOUR_CALM
        assert sum(isinstance(f, RstStreamFrame) for f in got) == 201  # the 201st is reset, then GOAWAY
        assert closed(sock)
    assert scenario.ask("another connection") == "[r1] another connection"
    samples = scrape(scenario.mesh)
    assert value(samples, "bindu_mesh_http2_goaways_total", pool="echo-agent", reason="stream_error_flood") == 1


def test_callers_have_their_own_stream_limit(scenario):
    encoder = hpack.Encoder()
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize())
        settings = read_frames(sock, lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)[-1]
        assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 3
        # Four requests left open (no END_STREAM): the fourth is over the limit announced.
        sock.sendall(b"".join(HeadersFrame(1 + 2 * i, data=encoder.encode(request_headers(scenario)),
                                           flags=["END_HEADERS"]).serialize() for i in range(4)))
        got = read_frames(sock, lambda f: isinstance(f, RstStreamFrame))
    resets = [(f.stream_id, f.error_code) for f in got if isinstance(f, RstStreamFrame)]
    assert resets == [(7, REFUSED_STREAM)]


def test_connections_without_a_preface_are_closed_and_idle_ones_get_goaway(scenario):
    silent = socket.create_connection(("127.0.0.1", scenario.listen), timeout=10)
    half = socket.create_connection(("127.0.0.1", scenario.listen), timeout=10)
    half.sendall(PREFACE[:10])
    idle = socket.create_connection(("127.0.0.1", scenario.listen), timeout=10)
    encoder = hpack.Encoder()
    idle.sendall(PREFACE + SettingsFrame(0).serialize()
                 + HeadersFrame(1, data=encoder.encode(request_headers(scenario)), flags=["END_HEADERS"]).serialize()
                 + DataFrame(1, data=grpc_body(scenario, "once"), flags=["END_STREAM"]).serialize())
    started = time.monotonic()
    try:
        assert ends(silent) and ends(half)
        assert time.monotonic() - started < 8, "preface_timeout is 1 s"
        got = read_frames(idle, lambda f: isinstance(f, GoAwayFrame))
        assert [f.stream_id for f in got if isinstance(f, HeadersFrame) and "END_STREAM" in f.flags] == [1]
        assert isinstance(got[-1], GoAwayFrame) and got[-1].error_code == 0 and got[-1].last_stream_id == 1
        assert closed(idle)
    finally:
        for sock in (silent, half, idle):
            sock.close()
    samples = scrape(scenario.mesh)
    assert value(samples, "bindu_mesh_caller_connections_closed_total", pool="echo-agent",
                 reason="preface_timeout") == 2
    assert value(samples, "bindu_mesh_caller_connections_closed_total", pool="echo-agent", reason="idle_timeout") >= 1
    assert scenario.ask("after the idle ones") == "[r1] after the idle ones"


def test_a_call_whose_caller_grants_no_window_is_reset_and_the_connection_goes_on(scenario):
    """A caller that announces a stream window of 0 and never grants more: the answer waits for
    window, and after callbacks.stalled_window_timeout that call is reset (CANCEL); the
    connection and its other calls go on."""
    encoder = hpack.Encoder()
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize()
                     + HeadersFrame(1, data=encoder.encode(request_headers(scenario)), flags=["END_HEADERS"]).serialize()
                     + DataFrame(1, data=grpc_body(scenario, "never read"), flags=["END_STREAM"]).serialize())
        got = read_frames(sock, lambda f: isinstance(f, RstStreamFrame) and f.stream_id == 1)
        waited = time.monotonic() - started
        assert not [f for f in got if isinstance(f, DataFrame) and f.stream_id == 1], "no window: no DATA"
        assert isinstance(got[-1], RstStreamFrame) and got[-1].error_code == 0x8, got[-3:]  # CANCEL
        assert 1.5 < waited < 10, waited
        # The connection goes on: a call with window is answered.
        sock.sendall(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
                     + HeadersFrame(3, data=encoder.encode(request_headers(scenario)), flags=["END_HEADERS"]).serialize()
                     + DataFrame(3, data=grpc_body(scenario, "read"), flags=["END_STREAM"]).serialize())
        later = read_frames(sock, lambda f: isinstance(f, HeadersFrame) and f.stream_id == 3 and "END_STREAM" in f.flags)
    assert answer_text(scenario, b"".join(f.data for f in later if isinstance(f, DataFrame) and f.stream_id == 3)) \
        == "[r1] read"
    samples = scrape(scenario.mesh)
    assert value(samples, "bindu_mesh_http2_stalled_streams_total", pool="echo-agent") == 1


def test_a_caller_that_grants_no_connection_window_is_cut_off(scenario):
    """A caller that takes more than the connection's first 65,535 bytes and never grants the
    connection more: after callbacks.stalled_window_timeout the connection ends with
    ENHANCE_YOUR_CALM (stalled_window)."""
    encoder = hpack.Encoder()
    headers = request_headers(scenario)
    headers[2] = (":path", "/bindu.grpc.AgentHandler/HandleMessagesStream")
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=15) as sock:
        sock.sendall(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20}).serialize()
                     + HeadersFrame(1, data=encoder.encode(headers), flags=["END_HEADERS"]).serialize()
                     + DataFrame(1, data=grpc_body(scenario, "flood:4"), flags=["END_STREAM"]).serialize())
        got = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
    assert sum(len(f.data) for f in got if isinstance(f, DataFrame)) <= 65535
    assert isinstance(got[-1], GoAwayFrame) and got[-1].error_code == ENHANCE_YOUR_CALM, got[-3:]
    samples = scrape(scenario.mesh)
    assert value(samples, "bindu_mesh_http2_goaways_total", pool="echo-agent", reason="stalled_window") == 1
    assert scenario.ask("a reader") == "[r1] a reader"


def test_what_one_connection_can_make_the_mesh_hold_is_bounded(tmp_path, pb):
    """A replica that takes a connection and never reads (nor answers a probe): each call's request
    waits in the mesh. A caller that opens 8 streams and sends as much as its windows allow would
    make the mesh hold 8 streams x 1 MiB without a cap; with callbacks.max_buffered_bytes of
    1.5 MiB (the least for 8 streams) the mesh stops giving the connection's window back, and the
    caller can send only about that much, and one window, more."""
    import threading

    from harness import Mesh, free_port
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.exceptions import FlowControlError

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    held = []
    threading.Thread(target=lambda: held.extend(blackhole.accept() for _ in range(4)), daemon=True).start()
    pool = (f"pools:\n  - agent: stuck-agent\n    replicas:\n"
            f"      - 127.0.0.1:{blackhole.getsockname()[1]}\n")
    policy = "health:\n  interval: 60s\n  timeout: 1s\n  start_healthy: true\n"
    mesh = Mesh(tmp_path, core_port=free_port(), extra_yaml=policy + pool,
                callbacks_yaml="  max_concurrent_streams: 8\n  max_buffered_bytes: 1572864\n")
    mesh.start()
    listen = mesh.pool_port("stuck-agent")
    try:
        connection = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        connection.initiate_connection()
        with socket.create_connection(("127.0.0.1", listen), timeout=10) as sock:
            sock.sendall(connection.data_to_send())
            headers = [(":method", "POST"), (":scheme", "http"), (":path", "/bindu.grpc.AgentHandler/HandleMessages"),
                       (":authority", f"127.0.0.1:{listen}"), ("content-type", "application/grpc"),
                       ("te", "trailers"), ("grpc-timeout", "20S")]
            sent = 0
            deadline = time.monotonic() + 6
            sock.settimeout(0.2)
            opened = []
            while time.monotonic() < deadline:
                if len(opened) < 8:
                    stream = connection.get_next_available_stream_id()
                    connection.send_headers(stream, headers)
                    # One message of 4 MiB - 5 bytes: its prefix, then as much of it as windows allow.
                    connection.send_data(stream, b"\x00" + (4 * 1024 * 1024 - 5).to_bytes(4, "big"))
                    sent += 5
                    opened.append(stream)
                for stream in opened:
                    window = min(connection.local_flow_control_window(stream), 16384)
                    if window > 0:
                        try:
                            connection.send_data(stream, b"x" * window)
                            sent += window
                        except FlowControlError:
                            pass
                sock.sendall(connection.data_to_send())
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                connection.receive_data(data)
                sock.sendall(connection.data_to_send())
        print(f"sent {sent} bytes on {len(opened)} streams")
        assert len(opened) == 8
        # The cap and the connection's window of 1 MiB, with room for the last frames in flight;
        # without the cap, about 6 MiB here (8 streams x 1 MiB, less what the 6 s left unsent).
        assert sent < 3.1 * 1024 * 1024, sent
        assert sent > 1024 * 1024, "the first window's worth is taken"
    finally:
        mesh.stop()
        blackhole.close()
        for conn, _ in held:
            conn.close()
