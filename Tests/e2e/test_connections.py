"""Connections to replicas: one multiplexed connection, closed when idle, checked by PING."""
import signal
import subprocess
import time

from faults import Scenario
import grpc

from harness import BIN_DIR, Mesh, Process, Replica, free_port, require_tool, scrape, value, wait_until

SLOW_PROBES = "health:\n  interval: 60s\n  timeout: 1s\n"


def connections_to(port):
    """Established TCP connections to 127.0.0.1:port, from `ss`."""
    out = subprocess.run([require_tool("ss"), "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_calls_share_one_connection_per_event_loop_and_idle_ones_close(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=1, policy_yaml=SLOW_PROBES + "upstream:\n  idle_timeout: 1s\n  keepalive_interval: off\n")
    try:
        port = scenario.replicas[0].port
        for i in range(50):
            scenario.ask(f"m{i}")
        assert 1 <= connections_to(port) <= 2, "calls are multiplexed: one connection per event loop"
        time.sleep(2.5)
        assert connections_to(port) == 0, "idle connections close after upstream.idle_timeout"
        assert scenario.ask("again").endswith("again"), "and the next call connects again"
    finally:
        scenario.stop()


def test_replica_that_stops_answering_pings_loses_its_connection(tmp_path, pb):
    scenario = Scenario(tmp_path, replicas=2, policy_yaml=SLOW_PROBES
                        + "upstream:\n  keepalive_interval: 300ms\n  keepalive_timeout: 300ms\n")
    try:
        frozen = scenario.replicas[0]
        frozen.process.send(signal.SIGSTOP)
        scenario.mesh.process.wait_line(lambda l: "did not answer a keepalive PING" in l, timeout=10)
        assert scenario.mesh.process.proc.poll() is None
    finally:
        scenario.replicas[0].process.send(signal.SIGCONT)
        scenario.stop()


def test_calls_a_replica_never_began_before_its_goaway_move_to_another(tmp_path, pb):
    """A replica's GOAWAY names the last stream it will answer; the calls on later streams were
    never begun, so they go to another replica instead of waiting for an answer."""
    messages, services = pb
    replicas = []
    try:
        for name, extra in (("r1", ["--goaway-after", "3"]), ("r2", [])):
            process = Process([str(BIN_DIR / "bindu-bench-replica"), "--name", name, *extra], cwd=tmp_path, name=name)
            replicas.append((process, int(process.wait_line(lambda l: l.startswith("listening on")).rsplit(":", 1)[1])))
        pool = (f"pools:\n  - agent: echo-agent\n    replicas:\n"
                + "".join(f"      - 127.0.0.1:{port}\n" for _, port in replicas))
        mesh = Mesh(tmp_path, core_port=free_port(), extra_yaml=SLOW_PROBES + pool)
        replicas.append((mesh, None))
        mesh.start()
        listen = mesh.pool_port("echo-agent")
        mesh.wait_in_rotation(2)
        stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{listen}"))
        calls = [stub.HandleMessages.future(
            messages.HandleRequest(messages=[messages.ChatMessage(content=f"m{i}")]), timeout=10) for i in range(40)]
        answers = [call.result().content for call in calls]
        assert all(answer.endswith(f"] m{i}") for i, answer in enumerate(answers)), answers
        samples = scrape(mesh)
        assert value(samples, "bindu_mesh_retries_total", reason="goaway") > 0, "some calls were on streams after r1's GOAWAY"
        assert all(e["ejections"] == 0 for p in mesh.pools() for e in p["endpoints"]), "a GOAWAY is not the replica's failure"
    finally:
        for process, _ in reversed(replicas):
            process.stop()


def test_calls_over_a_replicas_stream_limit_wait_for_a_stream_instead_of_failing(tmp_path, pb):
    """A replica that takes one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1) and is the
    only one: concurrent calls wait on the mesh's connection for its stream to end, rather than
    being refused by the replica with nowhere else to go."""
    messages, services = pb
    replica = Process([str(BIN_DIR / "bindu-bench-replica"), "--name", "r1", "--max-concurrent-streams", "1"],
                      cwd=tmp_path, name="r1")
    mesh = None
    try:
        port = int(replica.wait_line(lambda l: l.startswith("listening on")).rsplit(":", 1)[1])
        pool = f"pools:\n  - agent: echo-agent\n    replicas: [127.0.0.1:{port}]\n"
        mesh = Mesh(tmp_path, core_port=free_port(), extra_yaml=SLOW_PROBES + pool)
        mesh.start()
        listen = mesh.pool_port("echo-agent")
        mesh.wait_in_rotation(1)
        stub = services.AgentHandlerStub(grpc.insecure_channel(f"127.0.0.1:{listen}"))
        assert stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content="first")]),
                                   timeout=10).content == "[r1] first"
        calls = [stub.HandleMessages.future(
            messages.HandleRequest(messages=[messages.ChatMessage(content=f"m{i}")]), timeout=10) for i in range(40)]
        assert [call.result().content for call in calls] == [f"[r1] m{i}" for i in range(40)]
        assert value(scrape(mesh), "bindu_mesh_retries_total") == 0, "no call was refused by the replica"
    finally:
        if mesh:
            mesh.stop()
        replica.stop()


def test_health_probes_pass_while_callers_fill_every_stream_of_a_replica(tmp_path, pb):
    """A replica that takes two streams per connection, kept full by callers' slow calls for
    several health intervals: it is busy, not dead. Probes use a connection of their own, so they
    do not wait behind the calls: the replica stays in rotation and no call fails."""
    messages, services = pb
    replica = Replica(tmp_path, "r1", extra_args=["--max-concurrent-streams", "2"])
    mesh = None
    try:
        pool = f"pools:\n  - agent: echo-agent\n    replicas: [127.0.0.1:{replica.port}]\n"
        probes = "health:\n  interval: 300ms\n  timeout: 250ms\n  unhealthy_threshold: 2\n"
        mesh = Mesh(tmp_path, core_port=free_port(), extra_yaml=probes + pool)
        mesh.start()
        listen = mesh.pool_port("echo-agent")
        mesh.wait_in_rotation(1)
        # Four connections, so that the callers' calls fill the mesh's connection of every event loop.
        stubs = [services.AgentHandlerStub(grpc.insecure_channel(
            f"127.0.0.1:{listen}", options=[("grpc.use_local_subchannel_pool", 1)])) for _ in range(4)]
        # One call on each first: the mesh's connections to the replica then know its stream limit
        # (streams opened before a peer's SETTINGS arrive are not limited by it).
        for stub in stubs:
            stub.HandleMessages(messages.HandleRequest(messages=[messages.ChatMessage(content="warm")]), timeout=10)
        calls = [stubs[i % 4].HandleMessages.future(
            messages.HandleRequest(messages=[messages.ChatMessage(content=f"sleep:600 m{i}")]), timeout=30)
            for i in range(24)]
        started = time.monotonic()
        answers = [call.result().content for call in calls]  # about 3.6 s of full streams
        print(f"24 calls in {time.monotonic() - started:.1f}s")
        assert answers == [f"[r1] m{i}" for i in range(24)]
        assert "out of rotation" not in mesh.process.output(), "probes waited behind the callers' streams"
    finally:
        if mesh:
            mesh.stop()
        replica.stop()


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_caller_that_stops_reading_stops_the_replica_instead_of_filling_the_mesh(tmp_path, pb):
    """Backpressure: a replica streaming 192 MiB to a caller that pauses is held back by flow
    control (the mesh gives the replica window only as the caller takes the data), so the mesh
    holds about one window, not the stream; nothing is lost when the caller reads again."""
    scenario = Scenario(tmp_path, replicas=1, policy_yaml=SLOW_PROBES)
    try:
        pid = scenario.mesh.process.proc.pid
        before = rss_mb(pid)
        request = scenario.messages.HandleRequest(messages=[scenario.messages.ChatMessage(content="flood:3000")])
        stream = scenario.stub.HandleMessagesStream(request, timeout=120)
        first = next(stream)
        time.sleep(2.0)  # the caller reads nothing meanwhile
        paused = rss_mb(pid)
        rest = list(stream)
        assert paused - before < 64, f"the mesh buffered the stream: {before:.0f} MB -> {paused:.0f} MB"
        chunks = [first] + rest
        assert len(chunks) == 3000 and [int(c.metadata["index"]) for c in chunks] == list(range(3000))
        assert all(len(c.content) == 64 * 1024 for c in chunks) and chunks[-1].is_final
    finally:
        scenario.stop()
