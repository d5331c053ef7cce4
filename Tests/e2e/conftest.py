import importlib
import sys
import tempfile
from pathlib import Path

import pytest

from harness import ROOT, Core, stop_all

_stub_dir = Path(tempfile.mkdtemp(prefix="bindu-mesh-stubs-"))


def _generate_stubs():
    from grpc_tools import protoc
    proto_dir = ROOT / "Protos"
    code = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={_stub_dir}", f"--grpc_python_out={_stub_dir}",
                        str(proto_dir / "agent_handler.proto"), str(proto_dir / "health.proto")])
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(_stub_dir))


_generate_stubs()


@pytest.fixture
def pb():
    """The contract's messages and stubs (generated from Protos/agent_handler.proto)."""
    messages = importlib.import_module("agent_handler_pb2")
    services = importlib.import_module("agent_handler_pb2_grpc")
    return messages, services


@pytest.fixture
def cleanup():
    """Things to stop after the test, newest first."""
    items = []
    yield items
    stop_all(items)


@pytest.fixture
def core(tmp_path, cleanup):
    """A real Bindu core in its own working directory."""
    workdir = tmp_path / "core"
    workdir.mkdir()
    core = Core(workdir)
    cleanup.append(core)
    return core.start()
