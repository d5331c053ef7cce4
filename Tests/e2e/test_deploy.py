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


def compose_config(path):
    """The file as `docker-compose config` resolves it (no engine needed)."""
    result = subprocess.run([tool("docker-compose", venv_first=False), "-f", str(path), "config"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def mounts(service):
    """{target: source} of a service's volumes, in short or long syntax."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def published_ports(service):
    return {int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1]) for p in service["ports"]}


def port_of(url_or_address):
    return int(url_or_address.rstrip("/").rsplit(":", 1)[1])


def check_config(path):
    result = subprocess.run([str(BIN_DIR / "bindu-mesh"), "--config", str(path), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_version_is_printed():
    result = subprocess.run([str(BIN_DIR / "bindu-mesh"), "--version"], capture_output=True, text=True, check=True)
    version = (ROOT / "Sources/BinduMeshConfig/BinduMeshVersion.swift").read_text().split('"')[1]
    assert result.stdout.strip() == version
    assert f"bindu-mesh:{version}" in (ROOT / "k8s/mesh.yaml").read_text()


def test_dockerfile_passes_hadolint_and_matches_the_ports():
    subprocess.run([tool("hadolint"), str(DOCKER / "Dockerfile")], check=True)
    text = (DOCKER / "Dockerfile").read_text()
    assert "EXPOSE 3775 3776 9775" in text and "127.0.0.1:9775/healthz" in text
    assert "--static-swift-stdlib" in text and "USER 10001" in text


def test_compose_file_is_valid_and_matches_the_mesh_config(tmp_path):
    compose = compose_config(DOCKER / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"mesh", "core", "replica-1", "replica-2", "prometheus", "grafana"}
    assert services["core"]["network_mode"] == "service:mesh"
    mesh_config = yaml.safe_load((DOCKER / "mesh.yaml").read_text())
    check_config(DOCKER / "mesh.yaml")
    published = published_ports(services["mesh"])
    admin_port = port_of(mesh_config["admin"]["listen"])
    a2a_port = port_of(mesh_config["pools"][0]["config"]["deployment"]["url"])
    assert published == {admin_port, a2a_port}
    # The state file is on a named volume, so a new mesh container finds it.
    assert mounts(services["mesh"])[mesh_config["state"]["dir"]] in compose["volumes"]
    replicas = mesh_config["pools"][0]["replicas"]
    for replica in replicas:
        name, port = replica.split(":")
        assert f"0.0.0.0:{port}" in services[name]["command"]
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == [f"mesh:{admin_port}"]
    check_prometheus_and_grafana(services, prometheus, tmp_path)
    # The certificates the compose file mounts are made by the command its comment gives.
    assert "certs dev --out certs/dev --hosts localhost,127.0.0.1,replica-1,replica-2" in (DOCKER / "compose.yaml").read_text()
    for key in ("ca", "cert", "key"):
        assert mesh_config["pools"][0]["upstream_tls"][key].startswith("/certs/")


def check_prometheus_and_grafana(services, prometheus, tmp_path):
    """Prometheus loads monitoring/alerts.yml (its config passes `promtool check config` with the
    mounted rule file in place) and scrapes under the job the rules name; Grafana is given the
    dashboard of monitoring/grafana/ and a data source that is the prometheus service."""
    monitoring = ROOT / "monitoring"
    rule_mounts = mounts(services["prometheus"])
    assert [Path(rule_mounts[rule]) for rule in prometheus["rule_files"]] == [monitoring / "alerts.yml"]
    job = prometheus["scrape_configs"][0]["job_name"]
    assert f'up{{job="{job}"}}' in (monitoring / "alerts.yml").read_text()
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**prometheus, "rule_files": [rule_mounts[r] for r in prometheus["rule_files"]]}))
    check = subprocess.run([require_tool("promtool"), "check", "config", str(local)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    grafana = mounts(services["grafana"])
    assert Path(grafana["/etc/grafana/provisioning"]) == monitoring / "grafana" / "provisioning"
    provisioning = monitoring / "grafana" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "bindu-mesh.yml").read_text())["providers"]
    dashboard_dirs = {provider["options"]["path"] for provider in providers}
    dashboards = {target: Path(source) for target, source in grafana.items() if target.endswith(".json")}
    assert {str(Path(target).parent) for target in dashboards} <= dashboard_dirs
    assert list(dashboards.values()) == [monitoring / "grafana" / "bindu-mesh.json"]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(s["type"], s["url"]) for s in sources] == [("prometheus", f"http://prometheus:{published_ports(services['prometheus']).pop()}")]
    assert sources[0]["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_scale_out_compose_file_is_valid_and_matches_its_mesh_config():
    """Several cores behind one mesh: each core in the mesh's network namespace with its own
    working directory, gRPC port and A2A port, the agent's keys shared, the agent's storage and
    scheduler shared, and the search_path of its Postgres schema pinned."""
    from backing import agent_did, schema_name

    compose = compose_config(DOCKER / "compose.scale-out.yaml")
    services = compose["services"]
    mesh_path = DOCKER / "mesh.scale-out.yaml"
    check_config(mesh_path)
    mesh_config = yaml.safe_load(mesh_path.read_text())
    assert mounts(services["mesh"])["/etc/bindu-mesh/bindu-mesh.yaml"].endswith("/mesh.scale-out.yaml")
    assert mounts(services["mesh"])[mesh_config["state"]["dir"]] in compose["volumes"]

    pool = mesh_config["pools"][0]
    agent = pool["config"]
    cores = mesh_config["cores"]
    core_services = sorted(name for name in services if name.startswith("core-"))
    assert len(core_services) == len(cores) >= 2
    a2a_ports = [port_of(core["agent_url"]) for core in cores]
    assert len(set(a2a_ports)) == len(a2a_ports), "cores in one network namespace need their own A2A ports"
    assert published_ports(services["mesh"]) == set(a2a_ports) | {port_of(mesh_config["admin"]["listen"])}

    key_folder = f".bindu/agents/{agent['name']}/.bindu"
    key_volume = mounts(services["keys"])["/keys"]
    assert key_volume in compose["volumes"]
    work_volumes = set()
    for name, core in zip(core_services, cores):
        service = services[name]
        assert service["network_mode"] == "service:mesh"
        host, grpc_port = core["address"].rsplit(":", 1)
        assert host == "127.0.0.1" and f"--grpc-port {grpc_port}" in " ".join(service["command"])
        volumes = mounts(service)
        work_volumes.add(volumes[service["working_dir"]])
        assert volumes[f"{service['working_dir']}/{key_folder}"] == key_volume
        assert {"keys", "redis", "postgres"} <= set(service["depends_on"])
    assert len(work_volumes) == len(cores), "each core has a working directory of its own"

    assert agent["scheduler"]["type"] == "redis" and agent["storage"]["type"] == "postgres"
    assert agent["scheduler"]["redis_url"].startswith("redis://redis:")
    assert "@postgres:" in agent["storage"]["postgres_url"]
    init = mounts(services["postgres"])
    sql_file = next(source for target, source in init.items() if target.startswith("/docker-entrypoint-initdb.d/"))
    sql = Path(sql_file).read_text()
    schema = schema_name(agent_did(agent))
    database = services["postgres"]["environment"]["POSTGRES_DB"]
    assert f'ALTER DATABASE {database} SET search_path TO "{schema}", public' in sql
    assert f'CREATE SCHEMA IF NOT EXISTS "{schema}"' in sql

    for replica in pool["replicas"]:
        name, port = replica.split(":")
        assert f"0.0.0.0:{port}" in services[name]["command"]


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
    # The root filesystem is read-only: the state folder is a volume of the pod's own.
    state_mount = next(m for m in mesh["volumeMounts"] if m["mountPath"] == config["state"]["dir"])
    assert not state_mount.get("readOnly")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert state_mount["name"] in volumes
    grace = int(config["shutdown"]["grace_period"].rstrip("s"))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["admin"])


# The oldest Kubernetes whose gRPC probes (used by k8s/) are GA, and the newest kubernetes-validate
# ships schemas for (Tests/e2e/requirements.txt pins at least that release).
KUBERNETES_VERSIONS = ("1.27", "1.37")


def kubernetes_documents():
    return [(path.name, document) for path in sorted((ROOT / "k8s").glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text()) if document]


def schema_errors(document, version):
    """What the Kubernetes schema of `version` says against `document`, strictly (no property the
    schema does not know): None when it is valid."""
    import kubernetes_validate
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(map(str, error.path)) or '(top)'}: {error.message}"
    return None


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_follow_the_kubernetes_schemas(version):
    documents = kubernetes_documents()
    assert {document["kind"] for _, document in documents} >= {"Deployment", "Service", "ConfigMap", "NetworkPolicy"}
    errors = [f"{name} {document['kind']}/{document['metadata']['name']}: {error}"
              for name, document in documents if (error := schema_errors(document, version))]
    assert not errors, "\n".join(errors)


def test_the_kubernetes_schema_check_finds_mistakes():
    """The check above is strict: a misspelt key, a wrong type or a missing field is an error."""
    deployment = next(d for _, d in kubernetes_documents() if d["kind"] == "Deployment")
    version = KUBERNETES_VERSIONS[-1]
    assert schema_errors(deployment, version) is None

    def broken(change):
        copy = yaml.safe_load(yaml.safe_dump(deployment))
        change(copy["spec"]["template"]["spec"])
        return schema_errors(copy, version)

    assert "readinesProbe" in broken(lambda pod: pod["containers"][0].update(readinesProbe={}))
    assert broken(lambda pod: pod.update(terminationGracePeriodSeconds="35s"))
    assert "name" in broken(lambda pod: pod["containers"][0].pop("name"))


def test_shared_registry_compose_file_is_valid_and_matches_its_mesh_config():
    compose = compose_config(DOCKER / "compose.shared-registry.yaml")
    services = compose["services"]
    check_config(DOCKER / "mesh.shared-registry.yaml")
    mesh_config = yaml.safe_load((DOCKER / "mesh.shared-registry.yaml").read_text())
    registry_port = port_of(mesh_config["registry"]["listen"])
    database = mesh_config["registry"]["postgres_url"].split("/")[-1].split("?")[0]
    assert f"CREATE DATABASE {database}" in (DOCKER / "postgres-mesh-registry.sql").read_text()
    for host in "ab":
        mesh = services[f"mesh-{host}"]
        assert services[f"core-{host}"]["network_mode"] == f"service:mesh-{host}"
        assert mounts(mesh)["/etc/bindu-mesh/bindu-mesh.yaml"].endswith("mesh.shared-registry.yaml")
        assert mounts(mesh)[mesh_config["state"]["dir"]] in compose["volumes"]
    for replica, mesh in (("replica-1", "mesh-a"), ("replica-2", "mesh-b")):
        command = services[replica]["command"]
        assert command[command.index("--core") + 1] == f"{mesh}:{registry_port}"


def test_shared_registry_kubernetes_example_holds_a_valid_mesh_config(tmp_path):
    documents = list(yaml.safe_load_all((ROOT / "k8s" / "shared-registry.yaml").read_text()))
    secret = next(d for d in documents if d["kind"] == "Secret")
    (tmp_path / "mesh.yaml").write_text(secret["stringData"]["bindu-mesh.yaml"])
    check_config(tmp_path / "mesh.yaml")
    config = yaml.safe_load(secret["stringData"]["bindu-mesh.yaml"])
    service = next(d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == "bindu-mesh-registry")
    assert service["spec"]["ports"][0]["port"] == port_of(config["registry"]["listen"])
