"""The deployment files stay true to the code: Docker, Compose, Kubernetes, version."""
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import BIN_DIR, ROOT, require_tool

DOCKER = ROOT / "Docker"


def tool(name, venv_first=True):
    candidate = ROOT / ".venv" / "bin" / name
    if venv_first and candidate.exists():
        return str(candidate)
    return require_tool(name)


def check_config(path):
    result = subprocess.run([str(BIN_DIR / "bindu-mesh"), "--config", str(path), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_version_is_printed():
    result = subprocess.run([str(BIN_DIR / "bindu-mesh"), "--version"], capture_output=True, text=True, check=True)
    version = (ROOT / "Sources/BinduMesh/BinduMeshVersion.swift").read_text().split('"')[1]
    assert result.stdout.strip() == version
    assert f"bindu-mesh:{version}" in (ROOT / "k8s/mesh.yaml").read_text()


def test_dockerfile_passes_hadolint_and_matches_the_ports():
    subprocess.run([tool("hadolint"), str(DOCKER / "Dockerfile")], check=True)
    text = (DOCKER / "Dockerfile").read_text()
    assert "EXPOSE 3775 3776 9775" in text and "127.0.0.1:9775/healthz" in text
    assert "--static-swift-stdlib" in text and "USER 10001" in text


def test_compose_file_is_valid_and_matches_the_mesh_config(tmp_path):
    result = subprocess.run([tool("docker-compose", venv_first=False), "-f", str(DOCKER / "compose.yaml"), "config"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    compose = yaml.safe_load(result.stdout)
    services = compose["services"]
    assert set(services) == {"mesh", "core", "replica-1", "replica-2", "prometheus"}
    assert services["core"]["network_mode"] == "service:mesh"
    mesh_config = yaml.safe_load((DOCKER / "mesh.yaml").read_text())
    check_config(DOCKER / "mesh.yaml")
    published = {int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1]) for p in services["mesh"]["ports"]}
    admin_port = int(mesh_config["admin"]["listen"].rsplit(":", 1)[1])
    a2a_port = int(mesh_config["pools"][0]["config"]["deployment"]["url"].rsplit(":", 1)[1])
    assert published == {admin_port, a2a_port}
    replicas = mesh_config["pools"][0]["replicas"]
    for replica in replicas:
        name, port = replica.split(":")
        assert f"0.0.0.0:{port}" in services[name]["command"]
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == [f"mesh:{admin_port}"]
    # The certificates the compose file mounts are made by the command its comment gives.
    assert "certs dev --out certs/dev --hosts localhost,127.0.0.1,replica-1,replica-2" in (DOCKER / "compose.yaml").read_text()
    for key in ("ca", "cert", "key"):
        assert mesh_config["pools"][0]["upstream_tls"][key].startswith("/certs/")


def test_kubernetes_manifests_match_the_mesh_config(tmp_path):
    documents = [d for f in sorted((ROOT / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    config_text = by_kind[("ConfigMap", "bindu-mesh")]["data"]["bindu-mesh.yaml"]
    (tmp_path / "mesh.yaml").write_text(config_text)
    check_config(tmp_path / "mesh.yaml")
    config = yaml.safe_load(config_text)
    pool = config["pools"][0]
    service = by_kind[("Service", "echo-replicas")]
    assert service["spec"]["clusterIP"] == "None"
    host, port = pool["dns"].rsplit(":", 1)
    assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert int(port) == service["spec"]["ports"][0]["port"]
    deployment = by_kind[("Deployment", "bindu-agent")]
    mesh = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mesh")
    ports = {p["name"]: p["containerPort"] for p in mesh["ports"]}
    assert ports["admin"] == int(config["admin"]["listen"].rsplit(":", 1)[1])
    assert ports["callback"] == int(pool["listen"].rsplit(":", 1)[1])
    assert mesh["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert mesh["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert mesh["startupProbe"]["grpc"]["port"] == ports["callback"]
    grace = int(config["shutdown"]["grace_period"].rstrip("s"))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["admin"])
