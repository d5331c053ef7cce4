"""What the callback listener answers itself, frame by frame and with real clients: a valid HTTP/2
request that is not a gRPC call gets an HTTP status (405, 415) or, for a path no replica serves,
gRPC's UNIMPLEMENTED; a body other than its content-length is reset; the RFC 9113 rules hold on
the streams the mesh answered; a WINDOW_UPDATE flood ends the connection while a large streaming
exchange never trips it; and a call whose headers a replica would refuse is never sent to it."""
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame, PriorityFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from faults import Scenario, stubs
from harness import Mesh, Process, free_port, require_tool
from test_http2 import (ENHANCE_YOUR_CALM, PREFACE, PROTOCOL_ERROR, answer_text, closed, goaways_counted, grpc_body,
                        read_frames, read_frames_for, request_headers)
from harness import scrape, value


@pytest.fixture
def scenario(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, policy_yaml="health:\n  interval: 60s\n  timeout: 1s\n")
    yield scenario
    scenario.stop()


def replaced(headers, name, value):
    return [(n, value if n == name else v) for n, v in headers if value is not None or n != name]


def responses(frames):
    """{stream: (headers of its first HEADERS, body, ended)} of the HEADERS and DATA in `frames`."""
    found = {}
    for frame in frames:
        if isinstance(frame, HeadersFrame) and frame.stream_id not in found:
            found[frame.stream_id] = [dict(hpack.Decoder().decode(frame.data)), b"", "END_STREAM" in frame.flags]
        elif isinstance(frame, DataFrame) and frame.stream_id in found:
            found[frame.stream_id][1] += frame.data
            found[frame.stream_id][2] |= "END_STREAM" in frame.flags
    return {k: tuple(v) for k, v in found.items()}


def replica_calls(scenario):
    return [l[len("call "):] for l in scenario.replicas[0].process.output().splitlines() if l.startswith("call ")]


def test_requests_that_are_not_grpc_are_answered_and_never_forwarded(scenario):
    good = request_headers(scenario)
    encoder = hpack.Encoder()
    requests = {
        1: (replaced(good, ":method", "GET"), None),
        3: (replaced(good, ":method", "HEAD"), None),
        5: (replaced(good, "content-type", "application/json"), b"x" * 16384),  # DATA of 2^14 octets
        7: (replaced(good, "content-type", None), grpc_body(scenario, "no content-type")),
        9: (replaced(good, ":path", "/foo.Bar/Baz"), grpc_body(scenario, "unknown path")),
        11: (good, grpc_body(scenario, "after them")),
    }
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        out = [PREFACE + SettingsFrame(0).serialize()]
        for stream, (headers, body) in requests.items():
            out.append(HeadersFrame(stream, data=encoder.encode(headers),
                                    flags=["END_HEADERS"] + ([] if body else ["END_STREAM"])).serialize())
            if body:
                out.append(DataFrame(stream, data=body, flags=["END_STREAM"]).serialize())
        sock.sendall(b"".join(out))
        got = read_frames(sock, lambda f: isinstance(f, HeadersFrame) and f.stream_id == 11 and "END_STREAM" in f.flags)
    answers = responses(got)
    assert not [f for f in got if isinstance(f, GoAwayFrame)], "the connection goes on"
    for stream, status in ((1, "405"), (3, "405"), (5, "415"), (7, "415")):
        headers, body, ended = answers[stream]
        assert headers[":status"] == status and ended, (stream, answers[stream])
        assert int(headers["content-length"]) == len(body) if stream != 3 else body == b"", (stream, answers[stream])
    assert answers[1][0]["allow"] == "POST" and b"use POST" in answers[1][1]
    assert b"application/grpc" in answers[5][1]
    headers, _, ended = answers[9]
    assert headers[":status"] == "200" and headers["grpc-status"] == "12" and ended, headers  # trailers-only
    assert "unknown method /foo.Bar/Baz" in headers["grpc-message"]
    resets = {f.stream_id: f.error_code for f in got if isinstance(f, RstStreamFrame)}
    assert all(code == 0 for code in resets.values()), resets  # only NO_ERROR, cutting off unread requests
    assert answer_text(scenario, b"".join(f.data for f in got if isinstance(f, DataFrame) and f.stream_id == 11)) \
        == "[r1] after them"
    time.sleep(0.3)
    assert replica_calls(scenario) == ["after them"] or replica_calls(scenario)[-1:] == ["after them"]
    assert not {"no content-type", "unknown path"} & set(replica_calls(scenario))
    samples = scrape(scenario.mesh)
    for reason, count in (("method", 2), ("content_type", 2), ("path", 1), ("malformed", 0)):
        assert value(samples, "bindu_mesh_http2_refused_requests_total", pool="echo-agent", reason=reason) == count, reason


def test_real_clients_get_the_answers(scenario):
    """curl (nghttp2) and grpcio see the same answers as the frames above."""
    curl = require_tool("curl")
    url = f"http://127.0.0.1:{scenario.listen}/bindu.grpc.AgentHandler/HandleMessages"
    get = subprocess.run([curl, "-s", "--http2-prior-knowledge", "-w", "\n%{http_code}", url],
                         capture_output=True, text=True, timeout=30)
    assert get.stdout.endswith("\n405") and "use POST" in get.stdout, get
    post = subprocess.run([curl, "-s", "--http2-prior-knowledge", "-H", "content-type: application/json", "-d", "{}",
                           "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=30)
    assert post.stdout.endswith("\n415"), post
    unknown = scenario.channel.unary_unary("/foo.Bar/Baz", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as error:
        unknown(b"", timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, error.value
    assert scenario.ask("still fine") == "[r1] still fine"


def test_the_stream_rules_hold_on_streams_the_mesh_answered(scenario):
    """RFC 9113 §5.1 on a stream answered by the mesh and closed: PRIORITY is accepted; a
    WINDOW_UPDATE on an answered stream is harmless; CONTINUATION is a connection error."""
    get = hpack.Encoder().encode(replaced(request_headers(scenario), ":method", "GET"))
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize()
                     + HeadersFrame(1, data=get, flags=["END_HEADERS", "END_STREAM"]).serialize()
                     + WindowUpdateFrame(1, window_increment=1).serialize())
        got = read_frames(sock, lambda f: isinstance(f, DataFrame) and "END_STREAM" in f.flags)
        assert responses(got)[1][0][":status"] == "405"
        sock.sendall(PriorityFrame(1, depends_on=0, stream_weight=16).serialize()
                     + PingFrame(0, opaque_data=b"priority").serialize())
        got = read_frames(sock, lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
        assert isinstance(got[-1], PingFrame) and not [f for f in got if isinstance(f, GoAwayFrame)], got
        sock.sendall(ContinuationFrame(1, data=b"", flags=["END_HEADERS"]).serialize())
        got = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
        assert isinstance(got[-1], GoAwayFrame) and got[-1].error_code == PROTOCOL_ERROR, got
        assert closed(sock)


def test_a_body_other_than_its_content_length_is_reset_and_never_forwarded(scenario):
    encoder = hpack.Encoder()
    body = grpc_body(scenario, "too long")
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize()
                     + HeadersFrame(1, data=encoder.encode(request_headers(scenario, **{"content-length": "1"})),
                                    flags=["END_HEADERS"]).serialize()
                     + DataFrame(1, data=body, flags=["END_STREAM"]).serialize()
                     + HeadersFrame(3, data=encoder.encode(request_headers(scenario, **{"content-length": str(len(body) + 5)})),
                                    flags=["END_HEADERS"]).serialize()
                     + DataFrame(3, data=grpc_body(scenario, "too short"), flags=["END_STREAM"]).serialize()
                     + HeadersFrame(5, data=encoder.encode(request_headers(scenario)), flags=["END_HEADERS"]).serialize()
                     + DataFrame(5, data=grpc_body(scenario, "right"), flags=["END_STREAM"]).serialize())
        got = read_frames(sock, lambda f: isinstance(f, HeadersFrame) and f.stream_id == 5 and "END_STREAM" in f.flags)
    resets = {f.stream_id: f.error_code for f in got if isinstance(f, RstStreamFrame)}
    assert resets.get(1) == PROTOCOL_ERROR and resets.get(3) == PROTOCOL_ERROR, resets
    time.sleep(0.3)
    calls = replica_calls(scenario)
    assert "too long" not in calls and "too short" not in calls and "right" in calls, calls
    samples = scrape(scenario.mesh)
    assert value(samples, "bindu_mesh_http2_refused_requests_total", pool="echo-agent", reason="content_length") == 2


def test_a_window_update_flood_ends_the_connection_with_enhance_your_calm(scenario):
    """WINDOW_UPDATE +1 frames while nothing waits for window count against the control-frame
    budget (10,000 in 10 s)."""
    with socket.create_connection(("127.0.0.1", scenario.listen), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize())
        assert not [f for f in read_frames_for(sock, 0.3) if isinstance(f, GoAwayFrame)]
        flood = WindowUpdateFrame(0, window_increment=1).serialize() * 12_000
        try:
            sock.sendall(flood)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = read_frames(sock, lambda f: isinstance(f, GoAwayFrame))
        assert got and isinstance(got[-1], GoAwayFrame) and got[-1].error_code == ENHANCE_YOUR_CALM, got[-3:]
    assert goaways_counted(scenario, "control_frame_flood") == 1
    assert scenario.ask("another connection").endswith("another connection")


def test_large_exchanges_never_trip_the_flood_guards(scenario):
    """3.9 MB streamed back (60 chunks of 64 KiB) and 3.9 MB sent and echoed, over and over on one
    connection of a real client: every byte back, in order, and no GOAWAY."""
    messages = scenario.messages
    for _ in range(5):
        chunks = list(scenario.stub.HandleMessagesStream(
            messages.HandleRequest(messages=[messages.ChatMessage(role="user", content="flood:60")]), timeout=30))
        assert len(chunks) == 60 and [c.metadata["index"] for c in chunks] == [str(i) for i in range(60)]
        assert sum(len(c.content) for c in chunks) >= 60 * 64 * 1024 - 60
        text = "y" * (3_900_000)
        assert scenario.ask(text, timeout=30) == f"[r1] {text}"
    samples = scrape(scenario.mesh)
    assert value(samples, "bindu_mesh_http2_goaways_total") == 0


def python_replica(workdir: Path, name: str, *args) -> tuple:
    """A grpcio replica (bindu_stubs.py): its process and port."""
    process = Process([sys.executable, str(Path(__file__).with_name("bindu_stubs.py")), "replica", "--name", name,
                       "--listen", "127.0.0.1:0", *args], cwd=workdir, name=name)
    return process, int(process.wait_line(lambda l: l.startswith("listening on"), timeout=30).rsplit(":", 1)[1])


def test_a_call_over_what_a_grpc_core_replica_takes_is_refused_by_the_mesh_and_never_sent(tmp_path, pb):
    """A grpcio replica (gRPC's C-core) announces SETTINGS_MAX_HEADER_LIST_SIZE 16384 but refuses
    header lists over 8 KiB: a call with 10 KB of metadata gets RESOURCE_EXHAUSTED from the mesh
    (upstream.max_header_list_size, 8 KiB by default), naming the limit, and the replica's
    connection and its other calls go on; within the limit, metadata passes."""
    process, port = python_replica(tmp_path, "core")
    mesh = Mesh(tmp_path, core_port=free_port(), extra_yaml="health:\n  interval: 60s\n  timeout: 1s\n"
                "pools:\n  - agent: echo-agent\n    replicas:\n" f"      - 127.0.0.1:{port}\n")
    try:
        mesh.start()
        messages, services = stubs()
        channel = grpc.insecure_channel(f"127.0.0.1:{mesh.pool_port('echo-agent')}")
        stub = services.AgentHandlerStub(channel)
        request = messages.HandleRequest(messages=[messages.ChatMessage(role="user", content="hi")])
        assert stub.HandleMessages(request, timeout=10, metadata=[("x-within", "a" * 7000)]).content == "[core] hi"
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as error:
                stub.HandleMessages(request, timeout=10, metadata=[("x-big", "b" * 10_000)])
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value
            assert f"over the 8192 bytes replica 127.0.0.1:{port} takes (upstream.max_header_list_size)" \
                in error.value.details(), error.value.details()
        for _ in range(5):
            assert stub.HandleMessages(request, timeout=10).content == "[core] hi"
        output = mesh.process.output()
        assert "replica ended the call" not in output and "connection to the replica closed" not in output
        channel.close()
    finally:
        mesh.stop()
        process.stop()


def test_a_replica_that_announces_no_limit_gets_upstream_max_header_list_size(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, policy_yaml="health:\n  interval: 60s\n  timeout: 1s\n"
                        "upstream:\n  max_header_list_size: 2048\n")
    try:
        request = scenario.messages.HandleRequest(messages=[scenario.messages.ChatMessage(role="user", content="hi")])
        with pytest.raises(grpc.RpcError) as error:
            scenario.stub.HandleMessages(request, timeout=10, metadata=[("x-big", "b" * 3000)])
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value
        details = error.value.details()
        assert "over the 2048 bytes replica" in details and "(upstream.max_header_list_size)" in details, details
        assert "x-big" not in "".join(replica_calls(scenario))
        assert scenario.ask("within it") == "[r1] within it"
    finally:
        scenario.stop()
