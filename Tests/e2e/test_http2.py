"""The callback listener's HTTP/2, spoken by hand (hyperframe, hpack) and by a strict client
(h2): header blocks across CONTINUATION frames, the caller's flow-control windows honoured, and
a peer that breaks the protocol answered with GOAWAY and the right code while other calls go on."""
import random
import socket
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, PriorityFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from harness import http_get

from faults import Scenario

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PATH = "/bindu.grpc.AgentHandler/HandleMessages"
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x1, 0x3, 0x6, 0x9, 0xB


@pytest.fixture
def scenario(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, policy_yaml="health:\n  interval: 60s\n  timeout: 1s\n")
    yield scenario
    scenario.stop()


def grpc_body(scenario, text):
    payload = scenario.messages.HandleRequest(
        messages=[scenario.messages.ChatMessage(role="user", content=text)]).SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def answer_text(scenario, body):
    assert body[0] == 0 and struct.unpack(">I", body[1:5])[0] == len(body) - 5
    return scenario.messages.HandleResponse.FromString(body[5:]).content


def request_headers(scenario, **extra):
    return [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", f"127.0.0.1:{scenario.listen}"),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra.items()]


def read_frames(sock, stop):
    """Frames from `sock` until `stop(frame)` is true, the connection closes or the socket's
    timeout passes."""
    frames, buffered = [], b""
    while True:
        while len(buffered) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffered[:9]))
            if len(buffered) < 9 + length:
                break
            frame.parse_body(memoryview(buffered[9:9 + length]))
            buffered = buffered[9 + length:]
            frames.append(frame)
            if stop(frame):
                return frames
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return frames
        if not chunk:
            return frames
        buffered += chunk


def closed(sock):
    """Whether the peer closed `sock` (a reset counts: it closed with bytes of ours unread)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_header_block_across_continuation_frames_reaches_the_replica(scenario):
    block = hpack.Encoder().encode(request_headers(scenario, **{"x-padding": "p" * 3000}))
    thirds = [block[:len(block) // 3], block[len(block) // 3:2 * len(block) // 3], block[2 * len(block) // 3:]]
    headers = HeadersFrame(1, data=thirds[0])
    first = ContinuationFrame(1, data=thirds[1])
    last = ContinuationFrame(1, data=thirds[2], flags=["END_HEADERS"])
    data = DataFrame(1, data=grpc_body(scenario, "continued"), flags=["END_STREAM"])
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + b"".join(
            f.serialize() for f in (headers, first, last, data)))
        frames = read_frames(sock, lambda f: isinstance(f, HeadersFrame) and "END_STREAM" in f.flags)
    decoder = hpack.Decoder()
    blocks = [dict(decoder.decode(f.data)) for f in frames if isinstance(f, HeadersFrame)]
    body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert blocks[0][":status"] == "200" and blocks[-1]["grpc-status"] == "0", blocks
    assert answer_text(scenario, body) == "[r1] continued"


def test_an_answer_before_the_request_ends_is_followed_by_rst_stream_no_error(scenario):
    """The mesh answers `Health/Watch` at once (UNIMPLEMENTED) while the caller has not ended its
    request: it asks the caller to stop sending (RST_STREAM NO_ERROR) and keeps no stream open."""
    headers = request_headers(scenario)
    headers[2] = (":path", "/grpc.health.v1.Health/Watch")
    block = hpack.Encoder().encode(headers)
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize())
        frames = read_frames(sock, lambda f: isinstance(f, RstStreamFrame))
    on_stream = [f for f in frames if f.stream_id == 1]
    assert isinstance(on_stream[0], HeadersFrame) and "END_STREAM" in on_stream[0].flags
    assert dict(hpack.Decoder().decode(on_stream[0].data))["grpc-status"] == "12"
    assert isinstance(on_stream[-1], RstStreamFrame) and on_stream[-1].error_code == 0


def test_the_callers_flow_control_windows_hold_back_a_large_answer(scenario):
    """A strict client (h2) offers a 1,000-byte stream window and a 65,535-byte connection window
    and gives them back only as it reads: the mesh must send a 200 kB answer within them (h2
    fails the connection otherwise), and all of it arrives."""
    text = "w" * 200_000
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        conn.send_headers(1, request_headers(scenario))
        body = grpc_body(scenario, text)
        sent = 0
        answer, trailers, ended, largest = b"", {}, False, 0
        while not ended:
            # The request too goes out as the mesh's windows allow.
            while sent < len(body) and conn.local_flow_control_window(1) > 0:
                size = min(len(body) - sent, conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                conn.send_data(1, body[sent:sent + size], end_stream=sent + size == len(body))
                sent += size
            sock.sendall(conn.data_to_send())
            chunk = sock.recv(65536)
            assert chunk, "the mesh closed the connection"
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    answer += event.data
                    largest = max(largest, len(event.data))
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = dict(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    pytest.fail(f"the call failed: {event}")
            sock.sendall(conn.data_to_send())
    assert trailers.get("grpc-status") == "0", trailers
    assert answer_text(scenario, answer) == f"[r1] {text}"
    assert largest <= 1000, "no DATA frame larger than the stream's window"


@pytest.mark.parametrize("name, frames, code", [
    ("not HTTP/2", b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n", PROTOCOL_ERROR),
    ("a frame over the announced size", PREFACE + SettingsFrame(0).serialize()
     + struct.pack(">I", 20_000)[1:] + b"\x00\x00" + struct.pack(">I", 1) + b"x" * 20_000, FRAME_SIZE_ERROR),
    ("a header block that is not HPACK", PREFACE + SettingsFrame(0).serialize()
     + HeadersFrame(1, data=b"\xff\xff\xff\xff\xff", flags=["END_HEADERS"]).serialize(), COMPRESSION_ERROR),
    ("CONTINUATION with no HEADERS", PREFACE + SettingsFrame(0).serialize()
     + ContinuationFrame(1, data=b"\x82", flags=["END_HEADERS"]).serialize(), PROTOCOL_ERROR),
    ("DATA on a stream never opened", PREFACE + SettingsFrame(0).serialize()
     + DataFrame(5, data=b"x").serialize(), PROTOCOL_ERROR),
    ("a connection window over 2^31-1", PREFACE + SettingsFrame(0).serialize()
     + WindowUpdateFrame(0, window_increment=2**31 - 1).serialize(), FLOW_CONTROL_ERROR),
    ("SETTINGS_INITIAL_WINDOW_SIZE pushing an open stream's window over 2^31-1", PREFACE + SettingsFrame(0).serialize()
     + HeadersFrame(1, data=hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", PATH),
                                                    ("content-type", "application/grpc")]),
                    flags=["END_HEADERS"]).serialize()
     + WindowUpdateFrame(1, window_increment=2**31 - 1 - 65535).serialize()
     + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}).serialize(), FLOW_CONTROL_ERROR),
])
def test_a_peer_that_breaks_the_protocol_gets_goaway_and_other_calls_go_on(scenario, name, frames, code):
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(frames)
        received = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
        assert closed(sock), f"{name}: the connection must close"
    goaways = [f for f in received if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == code, f"{name}: {received}"
    assert scenario.ask("still here").endswith("still here")
    assert scenario.mesh.process.proc.poll() is None


def test_a_peer_that_goes_on_sending_after_its_violation_still_gets_the_goaway(scenario):
    """A socket closed while the peer's bytes are still unread is reset by the kernel, and a reset
    makes the peer drop what it had not read yet, the GOAWAY with it. The mesh shuts its side once
    the GOAWAY has left, and reads and drops what the peer goes on sending: the peer, reading only
    once it has sent 8 MB more, finds the GOAWAY and then the end of the stream, not a reset."""
    violation = PREFACE + SettingsFrame(0).serialize() + DataFrame(5, data=b"x").serialize()
    more = PingFrame(0, opaque_data=b"12345678").serialize() * (8 * 1024 * 1024 // 17)
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sent = []
        sender = threading.Thread(target=lambda: sent.append(_sendall(sock, violation + more)), daemon=True)
        sender.start()
        sender.join(10)
        assert sent == [True], "the mesh read all that was sent after the violation"
        received = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
        assert sock.recv(1) == b"", "the connection ends with the end of the stream"
    goaways = [f for f in received if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == PROTOCOL_ERROR, received
    assert scenario.ask("still here").endswith("still here")


def _sendall(sock, data):
    """Whether all of `data` was sent before the peer closed."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def test_a_flood_of_stream_resets_ends_the_connection_with_enhance_your_calm(scenario):
    """200 RST_STREAM frames in 30 s are allowed on a connection (a caller cancels calls); the
    201st ends it, as a guard against "rapid reset" floods (swift-nio-http2's limit)."""
    block = hpack.Encoder().encode(request_headers(scenario))
    reset = RstStreamFrame(1, error_code=8).serialize()
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize()
                     + reset * 200)
        sock.sendall(HeadersFrame(3, data=block, flags=["END_HEADERS"]).serialize())
        time.sleep(0.5)
        assert not [f for f in read_frames_for(sock, 0.5) if isinstance(f, GoAwayFrame)], "200 resets are allowed"
        sock.sendall(reset)
        goaways = [f for f in read_frames(sock, lambda f: isinstance(f, GoAwayFrame)) if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == ENHANCE_YOUR_CALM
    assert scenario.ask("still here").endswith("still here")


def read_frames_for(sock, seconds):
    """The frames that arrive on `sock` within `seconds`."""
    sock.settimeout(seconds)
    try:
        return read_frames(sock, lambda f: False)
    finally:
        sock.settimeout(10)


def test_random_frames_never_take_the_mesh_down(scenario):
    """300 connections, each a valid preface and SETTINGS followed by random frames (every type,
    random flags, stream IDs and payloads, some valid HEADERS among them): the mesh answers each
    as HTTP/2 says, and keeps serving calls."""
    rng = random.Random(7)
    block = hpack.Encoder().encode(request_headers(scenario))
    for _ in range(300):
        frames = b""
        for _ in range(rng.randint(1, 8)):
            kind = rng.randint(0, 10)
            stream = rng.choice([0, 1, 1, 3, 2, rng.randint(0, 2**31 - 1)])
            flags = rng.choice([0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x2D, rng.randint(0, 255)])
            payload = (block if kind == 1 and rng.random() < 0.5
                       else bytes(rng.randint(0, 255) for _ in range(rng.choice([0, 1, 4, 5, 8, 9, rng.randint(0, 64)]))))
            frames += struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
        with socket.create_connection(("127.0.0.1", scenario.listen), timeout=2) as sock:
            sock.sendall(PREFACE + SettingsFrame(0).serialize() + frames)
            sock.settimeout(0.05)
            try:
                while sock.recv(65536):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass
        assert scenario.mesh.process.proc.poll() is None, f"the mesh died on {frames.hex()}"
    assert scenario.ask("after the noise").endswith("after the noise")


def goaways_counted(scenario, reason):
    _, body = http_get(f"http://127.0.0.1:{scenario.mesh.admin_port}/metrics")
    for line in body.splitlines():
        if line.startswith("bindu_mesh_http2_goaways_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0


def open_stream(scenario, stream_id=1, end_headers=True):
    block = hpack.Encoder().encode(request_headers(scenario))
    return HeadersFrame(stream_id, data=block, flags=["END_HEADERS"] if end_headers else []).serialize()


@pytest.mark.parametrize("reason, allowed, flood", [
    # One empty DATA frame without END_STREAM in a row is allowed, as swift-nio-http2 allows.
    ("empty_data_flood", lambda s: open_stream(s) + DataFrame(1, data=b"").serialize(),
     lambda s: DataFrame(1, data=b"").serialize()),
    # Five CONTINUATION frames in a header block, zero-length ones counted.
    ("continuation_flood", lambda s: HeadersFrame(1, data=hpack.Encoder().encode([(":method", "POST")])).serialize()
     + ContinuationFrame(1, data=b"").serialize() * 5,
     lambda s: ContinuationFrame(1, data=b"").serialize()),
    # 10,000 PING, SETTINGS or PRIORITY frames in 10 s; each PING and SETTINGS costs an answer.
    ("control_frame_flood", lambda s: PingFrame(0, opaque_data=b"12345678").serialize() * 6000
     + PriorityFrame(1, depends_on=0, stream_weight=16).serialize() * 3999,
     lambda s: SettingsFrame(0).serialize()),
])
def test_a_flooding_peer_gets_goaway_enhance_your_calm_logged_and_counted(scenario, reason, allowed, flood):
    """Up to the limit the connection stays; one frame more ends it with ENHANCE_YOUR_CALM, the
    mesh logs it once with the peer's address and counts it by reason, and calls go on."""
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + allowed(scenario))
        early = read_frames_for(sock, 0.5)
        assert not [f for f in early if isinstance(f, GoAwayFrame)], f"{reason}: within the limit"
        sock.sendall(flood(scenario))
        received = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
        goaways = [f for f in received if isinstance(f, GoAwayFrame)]
        assert goaways and goaways[0].error_code == ENHANCE_YOUR_CALM, received[-5:]
        assert closed(sock)
    line = scenario.mesh.process.wait_line(lambda l: "caller connection ended with GOAWAY" in l, timeout=10)
    assert "mesh.peer=" in line and "127.0.0.1" in line
    assert goaways_counted(scenario, reason) == 1
    assert scenario.ask("still here").endswith("still here")


def test_a_call_without_grpc_timeout_gets_the_default_deadline(tmp_path, pb):
    """The core always sends grpc-timeout; a caller that sends none gets
    upstream.default_call_timeout, so its call cannot hold a stream (and a replica) for ever."""
    scenario = Scenario(tmp_path, replicas=1, policy_yaml="upstream:\n  default_call_timeout: 1s\n")
    try:
        with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
            block = hpack.Encoder().encode(request_headers(scenario))  # no grpc-timeout
            sock.sendall(PREFACE + SettingsFrame(0).serialize() + HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize()
                         + DataFrame(1, data=grpc_body(scenario, "sleep:5000 too long"), flags=["END_STREAM"]).serialize())
            started = time.monotonic()
            frames = read_frames(sock, lambda f: isinstance(f, HeadersFrame) and "END_STREAM" in f.flags)
            waited = time.monotonic() - started
        decoder = hpack.Decoder()
        trailers = [dict(decoder.decode(f.data)) for f in frames if isinstance(f, HeadersFrame)][-1]
        print(f"answered after {waited:.1f}s: {trailers}")
        assert trailers.get("grpc-status") == "4", trailers  # DEADLINE_EXCEEDED
        assert scenario.ask("still here").endswith("still here")
    finally:
        scenario.stop()
