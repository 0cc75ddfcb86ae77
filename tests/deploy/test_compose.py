"""docker-compose.yml, checked as a file (no Docker engine needed): the stack is
complete, pinned, health-checked, and its ports, listeners and settings agree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devstack.kafka import DEFAULT_KAFKA_VERSION
from devstack.registry import CCOMPAT_PATH, DEFAULT_APICURIO_VERSION
from tests.deploy.conftest import (
    COMPOSE_FILE,
    REPO_ROOT,
    SIMULATOR_API_KEY,
    contract_default,
    is_producer_config_env,
    load_yaml,
)

pytestmark = pytest.mark.unit

APP_IMAGE_SERVICES = {"simulator", "producer"}
EXPECTED_SERVICES = {"kafka", "schema-registry", "simulator", "producer", "prometheus", "grafana"}
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def with_defaults(value: Any) -> str:
    """A compose value with ${VAR:-default} interpolated as if VAR were unset."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): with_defaults(v) for k, v in env.items()}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def host_port(address: str) -> tuple[str, int]:
    """host:port (optionally with a scheme or a LISTENER:// prefix)."""
    if "://" in address:
        parts = urlsplit(address)
        assert parts.hostname is not None, address
        assert parts.port is not None, address
        return parts.hostname, parts.port
    host, _, port = address.rpartition(":")
    return host, int(port)


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """KAFKA_LISTENERS-style `NAME://host:port,...` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, rest = item.strip().partition("://")
        host, _, port = rest.rpartition(":")
        out[name] = (host, int(port))
    return out


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host ip, host port) of the short port syntax."""
    out = {}
    for spec in service.get("ports", []):
        ip, host, container = str(spec).split(":")
        out[int(container)] = (ip, int(host))
    return out


# --------------------------------------------------------------------------- structure


def test_compose_file_parses_with_the_expected_services(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (a built service must still name a tagged image)"
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last, f"{name}: image {image} has no tag"
        tag = last.split(":", 1)[1]
        assert tag, f"{name}: image {image} has an empty tag"
        assert tag != "latest", f"{name}: image {image} is not pinned"
        if name not in APP_IMAGE_SERVICES:
            assert re.search(r"\d+\.\d+", tag), f"{name}: tag {tag} is not a version"
            assert "build" not in service


def test_app_services_build_this_repository(services: dict[str, dict[str, Any]]) -> None:
    images = {services[name]["image"] for name in APP_IMAGE_SERVICES}
    assert len(images) == 1, "simulator and producer must share one image"
    for name in APP_IMAGE_SERVICES:
        build = services[name]["build"]
        assert Path(REPO_ROOT / build["context"] / build["dockerfile"]).resolve() == (
            REPO_ROOT / "Dockerfile"
        )


def test_app_services_run_like_the_helm_chart(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_IMAGE_SERVICES:
        service = services[name]
        assert service["user"] == "10001:10001", name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        test = check["test"]
        assert test, name
        assert test != ["NONE"], name
        if isinstance(test, list):
            assert test[0] in {"CMD", "CMD-SHELL"}, name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: healthcheck without {key}"


def test_python_healthchecks_compile(services: dict[str, dict[str, Any]]) -> None:
    """The image has no curl: its services probe with `python -c` snippets."""
    for name in APP_IMAGE_SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        compile(test[3], f"<{name} healthcheck>", "exec")


def test_dependencies_wait_for_healthy_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must use the long syntax"
        for dependency, condition in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency]
    assert set(services["producer"]["depends_on"]) == {"kafka", "schema-registry", "simulator"}
    assert "producer" in services["prometheus"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]


def test_published_ports_bind_to_localhost_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for container_port, (ip, _) in published(service).items():
            assert ip == "127.0.0.1", f"{name}:{container_port} is published on {ip}"


def test_bind_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name}: {source} does not exist"


# --------------------------------------------------------------------------- producer


def test_producer_environment_names_are_configuration_names(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment(services["producer"])
    unknown = sorted(name for name in env if not is_producer_config_env(name))
    assert not unknown, f"not in the producer's configuration reference: {unknown}"


def test_producer_defaults_to_the_simulator(services: dict[str, dict[str, Any]]) -> None:
    raw = services["producer"]["environment"]
    # One documented switch: both come from the shell or a .env file.
    assert raw["ASKELEPHANT_API_URL"].startswith("${ASKELEPHANT_API_URL:-")
    assert raw["ASKELEPHANT_API_KEY"].startswith("${ASKELEPHANT_API_KEY:-")
    env = environment(services["producer"])
    assert env["ASKELEPHANT_API_KEY"] == SIMULATOR_API_KEY
    simulator = services["simulator"]
    command = simulator["command"]
    assert command[0] == "simulator"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = int(command[command.index("--port") + 1])
    assert env["ASKELEPHANT_API_URL"] == f"http://simulator:{port}/api"
    assert f"127.0.0.1:{port}/" in healthcheck_text(simulator)
    assert port in published(simulator)
    assert services["producer"]["command"] == ["run"]


def test_metrics_port_agrees_everywhere(services: dict[str, dict[str, Any]]) -> None:
    producer = services["producer"]
    port = int(environment(producer)["METRICS_PORT"])
    assert str(port) == contract_default("METRICS_PORT")
    assert f"127.0.0.1:{port}/healthz" in healthcheck_text(producer)
    assert port in published(producer)
    prometheus = load_yaml(REPO_ROOT / "deploy" / "compose" / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "askelephant-kafka"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"producer:{port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


# --------------------------------------------------------------------------- kafka / registry


def test_kafka_listeners(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["kafka"])
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert set(bound) == set(protocols) == set(advertised) | {controller}
    assert controller not in advertised
    assert len(bound) == 3, "internal, host and controller listeners"
    # Every advertised listener is bound on the same port.
    for name, (_, port) in advertised.items():
        assert bound[name][1] == port, name
    # Internal listener: the service name, used by every other container.
    assert advertised[internal] == ("kafka", bound[internal][1])
    internal_address = f"kafka:{bound[internal][1]}"
    assert environment(services["producer"])["KAFKA_BOOTSTRAP_SERVERS"] == internal_address
    assert internal_address in healthcheck_text(services["kafka"])
    # Host listener: localhost:9092, published on the host's loopback.
    (host_name,) = set(advertised) - {internal}
    assert advertised[host_name] == ("localhost", 9092)
    assert published(services["kafka"])[9092] == ("127.0.0.1", 9092)
    # KRaft: the quorum voter is this node, on the controller listener.
    node_id, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert node_id == env["KAFKA_NODE_ID"] == "1"
    assert host_port(voter) == ("kafka", bound[controller][1])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env.get("CLUSTER_ID")


def test_compose_runs_the_broker_and_registry_the_tests_run(
    services: dict[str, dict[str, Any]],
) -> None:
    """The devstack's versions (the integration tests, the demo): compose is what is tested."""
    assert services["kafka"]["image"] == f"apache/kafka:{DEFAULT_KAFKA_VERSION}"
    assert (
        services["schema-registry"]["image"]
        == f"apicurio/apicurio-registry:{DEFAULT_APICURIO_VERSION}"
    )


def test_schema_registry_url_matches_its_listener(services: dict[str, dict[str, Any]]) -> None:
    registry = services["schema-registry"]
    listen_port = int(environment(registry)["QUARKUS_HTTP_PORT"])
    url = environment(services["producer"])["SCHEMA_REGISTRY_URL"]
    assert host_port(url) == ("schema-registry", listen_port)
    assert urlsplit(url).path == CCOMPAT_PATH  # Apicurio's Confluent-compatible API
    assert f"127.0.0.1:{listen_port}{CCOMPAT_PATH}/" in healthcheck_text(registry)
    assert listen_port in published(registry)


# --------------------------------------------------------------------------- prometheus / grafana


def _container_target(service: dict[str, Any], source: str) -> str:
    for volume in service["volumes"]:
        parts = str(volume).split(":")
        if (REPO_ROOT / parts[0]).resolve() == (REPO_ROOT / source).resolve():
            return parts[1]
    raise AssertionError(f"{source} is not mounted")


def test_prometheus_loads_the_alert_rules(
    services: dict[str, dict[str, Any]], promtool: Path, tmp_path: Path
) -> None:
    prometheus = services["prometheus"]
    config_path = REPO_ROOT / "deploy" / "compose" / "prometheus" / "prometheus.yml"
    mounted_config = _container_target(prometheus, "deploy/compose/prometheus/prometheus.yml")
    assert f"--config.file={mounted_config}" in prometheus["command"]
    rules_target = _container_target(prometheus, "helm/askelephant-kafka/files/alerts.yml")
    config = load_yaml(config_path)
    assert any(Path(rules_target).match(glob) for glob in config["rule_files"]), rules_target
    # promtool checks the config with the rule files where the container sees them.
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / Path(rules_target).name).write_text(
        (REPO_ROOT / "helm/askelephant-kafka/files/alerts.yml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    config["rule_files"] = [str(rules / Path(glob).name) for glob in config["rule_files"]]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [str(promtool), "check", "config", str(local)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_grafana_provisions_the_dashboard_and_datasource(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    provisioning = REPO_ROOT / "deploy" / "compose" / "grafana" / "provisioning"
    assert _container_target(grafana, "deploy/compose/grafana/provisioning") == (
        "/etc/grafana/provisioning"
    )
    dashboard_target = _container_target(grafana, "helm/askelephant-kafka/files/dashboard.json")
    (provider,) = load_yaml(provisioning / "dashboards" / "askelephant-kafka.yml")["providers"]
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    prometheus_port = next(iter(published(services["prometheus"])))
    assert host_port(datasource["url"]) == ("prometheus", prometheus_port)
    assert f"127.0.0.1:{prometheus_port}/" in healthcheck_text(services["prometheus"])
    grafana_port = next(iter(published(grafana)))
    assert f"127.0.0.1:{grafana_port}/api/health" in healthcheck_text(grafana)


def test_env_example_documents_the_real_api_switch() -> None:
    example = (REPO_ROOT / "deploy" / "compose" / "env.example").read_text(encoding="utf-8")
    assert "ASKELEPHANT_API_URL=" in example
    assert "ASKELEPHANT_API_KEY=" in example
    for line in example.splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]+)=", line)
        if match:
            assert "${" + match.group(1) in COMPOSE_FILE.read_text(encoding="utf-8"), line


def test_the_stack_image_includes_the_separate_simulator(
    services: dict[str, dict[str, Any]],
) -> None:
    # The Dockerfile leaves the simulator out by default; `simulator` runs from this image.
    for name in APP_IMAGE_SERVICES:
        assert services[name]["build"]["args"]["WITH_SIMULATOR"] == "true", name
