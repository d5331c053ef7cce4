"""The interop peers: a replica and a caller on each of three gRPC stacks, run as processes.

- grpcio (gRPC's C-core): `grpcio_peer.py`, on Bindu's own generated stubs;
- grpclib (a pure-Python HTTP/2 stack): `grpclib_peer.py`, on stubs that `grpclib_stubs` generates;
- grpc-java over Netty (the Kotlin SDK's transport): `Interop.java`, built by `java_classes` against
  Debian's libgrpc-java with protoc's Java plugin.

Each replica (`replica --name NAME`, printing `listening on HOST:PORT`) echoes HandleMessages' last
message, answers `error:CODE:MESSAGE` with that status and message, sleeps first on `sleep:MS`,
streams `stream:N` as the chunks `chunk-0` … `chunk-{N-1}`, echoes the metadata `x-interop-echo` and
`x-interop-echo-bin` in its headers, names itself in `x-interop-replica` and in the trailer
`x-interop-trailer`, and prints `call METHOD` for each call it runs.

Each caller (`call --target HOST:PORT`) runs the same scenarios and prints one JSON report of what it
saw (never a verdict): `unary` (10 B, 100 KB, 3.9 MB: status, length and SHA-256 of the answer),
`error`, `metadata`, `deadline` (200 ms on `sleep:1000`: status and elapsed ms), `concurrent` (50 calls
at once: how many came back with their own text) and `stream` (`stream:20`).
"""
import hashlib
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = HERE.parents[2] / "Protos"
SIZES = (10, 100_000, 3_900_000)
ERROR_MESSAGE = "interop: no such thing, été 100% gone"
STREAM_CHUNKS = 20
CONCURRENT_CALLS = 50
ECHO_BIN = bytes([0, 1, 0xFE, 0xFF])

# Debian's jars for grpc-java over Netty (libgrpc-java, libnetty-java, libprotobuf-java and their
# dependencies), under /usr/share/java.
JAVA_JARS = ("grpc-api", "grpc-core", "grpc-netty", "grpc-protobuf", "grpc-protobuf-lite", "grpc-stub",
             "grpc-context", "protobuf", "guava", "geronimo-annotation-1.3-spec", "perfmark-api", "gson",
             "error_prone_annotations", "netty-buffer", "netty-codec", "netty-codec-http", "netty-codec-http2",
             "netty-common", "netty-handler", "netty-resolver", "netty-transport", "netty-handler-proxy",
             "netty-codec-socks")


def arguments(description: str, name: str, *extra: str):
    """The command line every Python peer takes: `replica --name NAME` or `call --target HOST:PORT`
    (plus `extra` required options, such as `--stubs`)."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("mode", choices=("replica", "call"))
    for option in extra:
        parser.add_argument(option, required=True)
    parser.add_argument("--name", default=name)
    parser.add_argument("--target")
    return parser.parse_args()


def payload(size: int) -> str:
    """The text of a unary call of `size` bytes (the same on every stack)."""
    pattern = "0123456789abcdefghijklmnopqrstuvwxyz"
    return (pattern * (size // len(pattern) + 1))[:size]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def java_classpath() -> str:
    jars = [Path("/usr/share/java") / f"{name}.jar" for name in JAVA_JARS]
    missing = [str(jar) for jar in jars if not jar.exists()]
    assert not missing, f"grpc-java's jars are missing (apt-get install libgrpc-java libnetty-java ...): {missing}"
    return ":".join(str(jar) for jar in jars)


def java_classes(folder: Path) -> Path:
    """Compiles Interop.java and the contract's Java stubs (protoc + grpc_java_plugin) into `folder`."""
    for tool in ("protoc", "grpc_java_plugin", "javac", "java"):
        assert shutil.which(tool), f"{tool} is not on PATH (.ci/run installs it)"
    sources, classes = folder / "src", folder / "classes"
    sources.mkdir(parents=True, exist_ok=True)
    subprocess.run(["protoc", f"-I{PROTOS}", f"--java_out={sources}",
                    f"--plugin=protoc-gen-grpc-java={shutil.which('grpc_java_plugin')}", f"--grpc-java_out={sources}",
                    str(PROTOS / "agent_handler.proto")], check=True)
    files = [str(path) for path in sources.rglob("*.java")] + [str(HERE / "Interop.java")]
    subprocess.run(["javac", "-nowarn", "-d", str(classes), "-cp", java_classpath(), *files], check=True,
                   capture_output=True)
    return classes


def grpclib_stubs(folder: Path) -> Path:
    """The contract's messages and grpclib stubs (`agent_handler_pb2`, `agent_handler_grpc`) in `folder`."""
    import sys
    from grpc_tools import protoc
    plugin = Path(sys.executable).with_name("protoc-gen-grpclib_python")
    assert plugin.exists(), f"{plugin} is missing: pip install grpclib"
    folder.mkdir(parents=True, exist_ok=True)
    code = protoc.main(["protoc", f"-I{PROTOS}", f"--python_out={folder}", f"--plugin=protoc-gen-grpclib_python={plugin}",
                        f"--grpclib_python_out={folder}", str(PROTOS / "agent_handler.proto")])
    assert code == 0, "protoc (grpclib) failed"
    return folder
