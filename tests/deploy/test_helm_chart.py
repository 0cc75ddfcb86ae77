"""The Helm chart helm/askelephant-kafka: lint, render, Kubernetes schema validation
and the behaviour of the templates (labels, guards, secrets, security, monitoring)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import (
    CHART_DIR,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    Helm,
    Rendered,
    ci_values_files,
    contract_default,
    is_producer_config_env,
    load_yaml,
)

pytestmark = pytest.mark.unit

CI_FILES = ci_values_files()
CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_FILES]
CI_FILE = {p.name.removesuffix("-values.yaml"): p for p in CI_FILES}

API_KEY = "sk-apik_test.not-a-real-secret"
WITH_KEY: dict[str, Any] = {"askelephant": {"apiKey": API_KEY}}
FULLNAME = f"{RELEASE}-askelephant-kafka"

SELECTOR_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
COMMON_LABELS = SELECTOR_LABELS | {
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}
#: Kinds that are CustomResources (no schema in kubernetes-validate).
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value dicts (later wins)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def secret_ref(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


# --------------------------------------------------------------------------- lint / render


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_helm_lint_strict(helm: Helm, values_file: Path) -> None:
    result = helm.run("lint", "--strict", str(CHART_DIR), "--values", str(values_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_ci_values_render(helm: Helm, values_file: Path) -> None:
    rendered = helm.template([values_file])
    assert "Deployment" in rendered.kinds()
    for obj in rendered.objects:
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]
        assert obj["metadata"]["name"].startswith(FULLNAME), obj["metadata"]["name"]


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_manifests_pass_kubernetes_validate_strict(
    helm: Helm,
    kubernetes_validate: list[str],
    values_file: Path,
    k8s_version: str,
    tmp_path: Path,
) -> None:
    rendered = helm.template([values_file])
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(rendered.text, encoding="utf-8")
    result = subprocess.run(
        [*kubernetes_validate, "--strict", "--kubernetes-version", k8s_version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output, output
    # Every built-in object was checked; only the prometheus-operator CRDs have no schema.
    for obj in rendered.objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in CRD_KINDS:
            assert f"Couldn't find schema for kind {kind}" in output
        else:
            assert f"passed for resource {kind.lower()}/{name} " in output, output
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert any(f"kind {k} " in line for k in CRD_KINDS), line


def test_notes_render(helm: Helm) -> None:
    result = helm.run(
        "install",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--values",
        str(CI_FILE["all-features"]),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"deployment/{FULLNAME}" in notes
    assert "PrometheusRule" in notes


# --------------------------------------------------------------------------- objects


def test_defaults_render_only_the_core_objects(helm: Helm) -> None:
    rendered = helm.template(values=WITH_KEY)
    assert rendered.kinds() == ["ConfigMap", "Deployment", "Secret", "ServiceAccount"]


def test_all_features_render_every_optional_object(helm: Helm) -> None:
    kinds = helm.template([CI_FILE["all-features"]]).kinds()
    for kind in ("Service", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"):
        assert kind in kinds
    assert kinds.count("ConfigMap") == 2  # settings + Grafana dashboard


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_every_object_has_the_standard_labels(helm: Helm, values_file: Path) -> None:
    for obj in helm.template([values_file]).objects:
        labels = obj["metadata"].get("labels", {})
        missing = COMMON_LABELS - labels.keys()
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/name"] == "askelephant-kafka"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        chart = load_yaml(CHART_DIR / "Chart.yaml")
        assert labels["helm.sh/chart"] == f"{chart['name']}-{chart['version']}"
        assert labels["app.kubernetes.io/version"] == chart["appVersion"]


def _selectors(rendered: Rendered) -> Iterator[tuple[str, dict[str, str]]]:
    deployment = rendered.deployment
    yield "Deployment", deployment["spec"]["selector"]["matchLabels"]
    for service in rendered.all("Service"):
        yield "Service", service["spec"]["selector"]
    for kind in ("ServiceMonitor", "PodMonitor"):
        for monitor in rendered.all(kind):
            yield kind, monitor["spec"]["selector"]["matchLabels"]
    for policy in rendered.all("NetworkPolicy"):
        yield "NetworkPolicy", policy["spec"]["podSelector"]["matchLabels"]


@pytest.mark.parametrize(
    "values",
    [
        merge(WITH_KEY),
        merge(WITH_KEY, {"image": {"tag": "9.9.9"}}),
        merge(WITH_KEY, {"metrics": {"serviceMonitor": {"enabled": True}}}),
        merge(WITH_KEY, {"metrics": {"podMonitor": {"enabled": True}}}),
        merge(WITH_KEY, {"networkPolicy": {"enabled": True}, "podLabels": {"extra": "x"}}),
    ],
    ids=["default", "image-tag", "servicemonitor", "podmonitor", "networkpolicy"],
)
def test_selector_labels_are_stable(helm: Helm, values: dict[str, Any]) -> None:
    rendered = helm.template(values=values)
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    for kind, selector in _selectors(rendered):
        assert set(selector) == SELECTOR_LABELS, f"{kind} selector {selector}"
        assert not any("version" in k or k == "helm.sh/chart" for k in selector)
        assert selector.items() <= pod_labels.items(), f"{kind} selector misses the pod"


def test_selector_does_not_change_with_the_version(helm: Helm) -> None:
    a = helm.template(values=merge(WITH_KEY, {"image": {"tag": "1.0.0"}}))
    b = helm.template(values=merge(WITH_KEY, {"image": {"tag": "2.0.0"}}))
    assert a.deployment["spec"]["selector"] == b.deployment["spec"]["selector"]
    assert a.deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.0"
    assert a.container["image"] == "askelephant-kafka:1.0.0"


def test_image_digest_wins_over_tag(helm: Helm) -> None:
    digest = "sha256:" + "a" * 64
    values = merge(
        WITH_KEY, {"image": {"registry": "ghcr.io", "repository": "acme/ak", "digest": digest}}
    )
    assert helm.template(values=values).container["image"] == f"ghcr.io/acme/ak@{digest}"


# --------------------------------------------------------------------------- single poller


def test_single_replica_with_recreate_strategy(helm: Helm) -> None:
    spec = helm.template(values=WITH_KEY).deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_zero_replicas_pause_the_producer(helm: Helm) -> None:
    rendered = helm.template(values=merge(WITH_KEY, {"replicaCount": 0}))
    assert rendered.deployment["spec"]["replicas"] == 0


@pytest.mark.parametrize("replicas", [2, 3])
def test_more_than_one_replica_is_refused(helm: Helm, replicas: int) -> None:
    error = helm.template_error(values=merge(WITH_KEY, {"replicaCount": replicas}))
    assert f"replicaCount={replicas} is not supported" in error
    assert "single replica" in error
    assert "checkpoints" in error


# --------------------------------------------------------------------------- credentials


def test_api_key_from_the_chart_secret(helm: Helm) -> None:
    rendered = helm.template(values=WITH_KEY)
    secret = rendered.one("Secret")
    assert secret["metadata"]["name"] == FULLNAME
    assert secret["type"] == "Opaque"
    assert decoded(secret) == {"api-key": API_KEY}
    env = rendered.env()
    assert secret_ref(env["ASKELEPHANT_API_KEY"]) == (FULLNAME, "api-key")
    assert "ASKELEPHANT_ACCESS_TOKEN" not in env
    # The key never appears in plain text anywhere in the manifests.
    assert API_KEY not in rendered.text


def test_access_token_from_the_chart_secret(helm: Helm) -> None:
    rendered = helm.template(values={"askelephant": {"accessToken": "tok-123"}})
    assert decoded(rendered.one("Secret")) == {"access-token": "tok-123"}
    env = rendered.env()
    assert secret_ref(env["ASKELEPHANT_ACCESS_TOKEN"]) == (FULLNAME, "access-token")
    assert "ASKELEPHANT_API_KEY" not in env


def test_api_key_from_an_existing_secret(helm: Helm) -> None:
    rendered = helm.template(values={"askelephant": {"existingSecret": "creds"}})
    assert rendered.maybe("Secret") is None  # nothing left for the chart to hold
    env = rendered.env()
    assert secret_ref(env["ASKELEPHANT_API_KEY"]) == ("creds", "api-key")
    assert "ASKELEPHANT_ACCESS_TOKEN" not in env


def test_access_token_from_an_existing_secret(helm: Helm) -> None:
    rendered = helm.template([CI_FILE["existing-secret"]])
    assert rendered.maybe("Secret") is None
    env = rendered.env()
    assert secret_ref(env["ASKELEPHANT_ACCESS_TOKEN"]) == (
        "askelephant-credentials",
        "access-token",
    )
    assert "ASKELEPHANT_API_KEY" not in env
    assert secret_ref(env["SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"]) == (
        "schema-registry-credentials",
        "user-info",
    )


def test_existing_secret_wins_over_inline_credentials(helm: Helm) -> None:
    values = {"askelephant": {"existingSecret": "creds", "apiKey": API_KEY}}
    rendered = helm.template(values=values)
    assert secret_ref(rendered.env()["ASKELEPHANT_API_KEY"]) == ("creds", "api-key")
    assert API_KEY not in rendered.text


def test_missing_credentials_are_refused(helm: Helm) -> None:
    error = helm.template_error()
    assert "No AskElephant API credentials" in error
    assert "askelephant.apiKey" in error
    assert "askelephant.existingSecret" in error


def test_api_key_and_access_token_together_are_refused(helm: Helm) -> None:
    error = helm.template_error(values={"askelephant": {"apiKey": "a", "accessToken": "b"}})
    assert "mutually exclusive" in error


def test_existing_secret_without_any_key_name_is_refused(helm: Helm) -> None:
    values = {"askelephant": {"existingSecret": "creds", "existingSecretApiKeyKey": ""}}
    assert "name the key" in helm.template_error(values=values)


# --------------------------------------------------------------------------- configuration


def test_configmap_holds_the_non_secret_settings(helm: Helm) -> None:
    rendered = helm.template(values=WITH_KEY)
    config = rendered.config_env()
    assert all(isinstance(v, str) for v in config.values())
    assert all(is_producer_config_env(name) for name in config), sorted(config)
    assert config["METRICS_PORT"] == contract_default("METRICS_PORT")
    assert config["ASKELEPHANT_API_URL"] == contract_default("ASKELEPHANT_API_URL")
    assert config["RESOURCES"] == contract_default("RESOURCES")
    assert config["TOPIC_PREFIX"] == contract_default("TOPIC_PREFIX")
    assert config["CHECKPOINT_TOPIC"] == contract_default("CHECKPOINT_TOPIC")
    assert config["PRODUCER_ID"] == contract_default("PRODUCER_ID")
    # Secrets never go to the ConfigMap.
    for secret_name in ("ASKELEPHANT_API_KEY", "ASKELEPHANT_ACCESS_TOKEN", "KAFKA_SASL_PASSWORD"):
        assert secret_name not in config


def test_container_env_names_are_configuration_names(helm: Helm) -> None:
    for values_file in CI_FILES:
        rendered = helm.template([values_file])
        extra = {e["name"] for e in load_yaml(values_file).get("extraEnv", [])}
        for name in set(rendered.env()) - extra:
            assert is_producer_config_env(name), f"{values_file.name}: {name}"


def test_kafka_config_becomes_kafka_env(helm: Helm) -> None:
    values = merge(
        WITH_KEY,
        {
            "kafka": {
                "config": {
                    "compression.type": "zstd",
                    "queue.buffering.max.messages": 1000000,
                    "enable.idempotence": True,
                    "linger.ms": 5.5,
                }
            }
        },
    )
    config = helm.template(values=values).config_env()
    assert config["KAFKA_COMPRESSION_TYPE"] == "zstd"
    assert config["KAFKA_QUEUE_BUFFERING_MAX_MESSAGES"] == "1000000"
    assert config["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert config["KAFKA_LINGER_MS"] == "5.5"


def test_secret_kafka_properties_go_through_secrets(helm: Helm) -> None:
    values = merge(
        WITH_KEY,
        {
            "kafka": {
                "secretConfig": {"sasl.oauthbearer.client.secret": "s3cr3t"},
                "configFromSecrets": [
                    {"property": "ssl.key.password", "secretName": "tls-pw", "secretKey": "pw"}
                ],
            }
        },
    )
    rendered = helm.template(values=values)
    assert decoded(rendered.one("Secret"))["kafka.sasl.oauthbearer.client.secret"] == "s3cr3t"
    env = rendered.env()
    assert secret_ref(env["KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"]) == (
        FULLNAME,
        "kafka.sasl.oauthbearer.client.secret",
    )
    assert secret_ref(env["KAFKA_SSL_KEY_PASSWORD"]) == ("tls-pw", "pw")
    assert "s3cr3t" not in json.dumps(rendered.config_env())


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"config": {"bootstrap.servers": "x:9092"}}, "kafka.bootstrapServers"),
        ({"config": {"security.protocol": "SSL"}}, "kafka.securityProtocol"),
        ({"secretConfig": {"sasl.password": "x"}}, "kafka.sasl.password"),
        (
            {"config": {"linger.ms": 5}, "secretConfig": {"linger.ms": 5}},
            "both kafka.config and kafka.secretConfig",
        ),
    ],
    ids=["bootstrap", "protocol", "sasl-password", "duplicate"],
)
def test_managed_or_duplicate_kafka_properties_are_refused(
    helm: Helm, kafka: dict[str, Any], message: str
) -> None:
    assert message in helm.template_error(values=merge(WITH_KEY, {"kafka": kafka}))


def test_sasl_and_tls(helm: Helm) -> None:
    rendered = helm.template([CI_FILE["sasl-tls"]])
    config = rendered.config_env()
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    env = rendered.env()
    assert secret_ref(env["KAFKA_SASL_USERNAME"]) == ("kafka-scram-credentials", "username")
    assert secret_ref(env["KAFKA_SASL_PASSWORD"]) == ("kafka-scram-credentials", "password")
    assert secret_ref(env["SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"]) == (
        FULLNAME,
        "schema-registry-user-info",
    )
    # The CA and the client certificate are files from Secrets, at the paths librdkafka gets.
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    ca = volumes["kafka-ca"]["secret"]
    assert ca["secretName"] == "kafka-cluster-ca-cert"
    ca_path = f"{mounts['kafka-ca']['mountPath']}/{ca['items'][0]['path']}"
    assert config["KAFKA_SSL_CA_LOCATION"] == ca_path
    assert mounts["kafka-ca"]["readOnly"] is True
    client = volumes["kafka-client-cert"]["secret"]
    assert client["secretName"] == "kafka-client-tls"
    client_dir = mounts["kafka-client-cert"]["mountPath"]
    assert config["KAFKA_SSL_CERTIFICATE_LOCATION"] == f"{client_dir}/tls.crt"
    assert config["KAFKA_SSL_KEY_LOCATION"] == f"{client_dir}/tls.key"
    assert {i["path"] for i in client["items"]} == {"tls.crt", "tls.key"}


#: Every credential from an existing Secret: SASL_SSL with SCRAM, mutual TLS to the brokers,
#: an https registry with basic auth, its own CA and a client certificate.
FROM_EXISTING_SECRETS: dict[str, Any] = {
    "askelephant": {"existingSecret": "askelephant-credentials"},
    "kafka": {
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "kafka-scram"},
        "tls": {"caSecret": "kafka-ca", "clientCertSecret": "kafka-client-tls"},
    },
    "schemaRegistry": {
        "url": "https://registry.example.internal:8081",
        "basicAuth": {"existingSecret": "registry-credentials", "existingSecretKey": "auth"},
        "tls": {
            "caSecret": "registry-ca",
            "caSecretKey": "bundle.pem",
            "clientCertSecret": "registry-client-tls",
        },
    },
}
TLS_VOLUMES = {
    # volume: (Secret, files, env variable -> file)
    "kafka-ca": ("kafka-ca", {"ca.crt"}, {"KAFKA_SSL_CA_LOCATION": "ca.crt"}),
    "kafka-client-cert": (
        "kafka-client-tls",
        {"tls.crt", "tls.key"},
        {"KAFKA_SSL_CERTIFICATE_LOCATION": "tls.crt", "KAFKA_SSL_KEY_LOCATION": "tls.key"},
    ),
    "schema-registry-ca": (
        "registry-ca",
        {"bundle.pem"},
        {"SCHEMA_REGISTRY_SSL_CA_LOCATION": "bundle.pem"},
    ),
    "schema-registry-client-cert": (
        "registry-client-tls",
        {"tls.crt", "tls.key"},
        {
            "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": "tls.crt",
            "SCHEMA_REGISTRY_SSL_KEY_LOCATION": "tls.key",
        },
    ),
}


def test_every_credential_from_existing_secrets(helm: Helm) -> None:
    rendered = helm.template(values=FROM_EXISTING_SECRETS)
    env = rendered.env()
    assert secret_ref(env["KAFKA_SASL_USERNAME"]) == ("kafka-scram", "username")
    assert secret_ref(env["KAFKA_SASL_PASSWORD"]) == ("kafka-scram", "password")
    assert secret_ref(env["SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"]) == (
        "registry-credentials",
        "auth",
    )
    assert secret_ref(env["ASKELEPHANT_API_KEY"]) == ("askelephant-credentials", "api-key")
    # Nothing to hold, so the chart makes no Secret of its own.
    assert rendered.maybe("Secret") is None
    config = rendered.config_env()
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert not {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} & set(config)
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" not in config


def test_tls_files_are_secret_volumes_mounted_read_only(helm: Helm) -> None:
    rendered = helm.template(values=FROM_EXISTING_SECRETS)
    config = rendered.config_env()
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert set(volumes) == {"tmp", *TLS_VOLUMES}
    assert set(mounts) == set(volumes)
    for name, (secret_name, files, locations) in TLS_VOLUMES.items():
        secret = volumes[name]["secret"]
        assert secret["secretName"] == secret_name
        assert {item["key"] for item in secret["items"]} == files
        # Readable by its owner (and the pod's fsGroup, as which the producer runs); nobody
        # may write, and other users see nothing.
        mode = secret["defaultMode"]
        assert mode & 0o400, f"{name}: {oct(mode)}"
        assert not mode & 0o222, f"{name}: {oct(mode)}"
        assert not mode & 0o007, f"{name}: {oct(mode)}"
        assert mounts[name]["readOnly"] is True, name
        for variable, file in locations.items():
            assert config[variable] == f"{mounts[name]['mountPath']}/{file}", variable
    # Kafka's and the registry's files never share a directory.
    paths = [mounts[name]["mountPath"] for name in TLS_VOLUMES]
    assert len(set(paths)) == len(paths)


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_secret_values_appear_only_base64_encoded_in_the_chart_secret(
    helm: Helm, values_file: Path
) -> None:
    """Whatever the values give as a secret is readable nowhere but the chart's Secret."""
    values = load_yaml(values_file)
    secrets = [
        values.get("askelephant", {}).get("apiKey"),
        values.get("askelephant", {}).get("accessToken"),
        values.get("kafka", {}).get("sasl", {}).get("password"),
        values.get("schemaRegistry", {}).get("basicAuth", {}).get("userInfo"),
        values.get("webhooks", {}).get("secret"),
        *values.get("kafka", {}).get("secretConfig", {}).values(),
    ]
    secrets = [str(s) for s in secrets if s]
    rendered = helm.template([values_file])
    for obj in rendered.objects:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj)
        for secret in secrets:
            # The secret and its halves: `user:password` must not leak its password either.
            for part in {secret, *secret.split(":")[1:]}:
                assert part not in text, f"{obj['kind']} {obj['metadata']['name']}"


def test_without_tls_nothing_extra_renders(helm: Helm) -> None:
    rendered = helm.template(values=WITH_KEY)
    assert [v["name"] for v in rendered.pod_spec["volumes"]] == ["tmp"]
    assert [m["name"] for m in rendered.container["volumeMounts"]] == ["tmp"]
    config = rendered.config_env()
    extra = {k for k in config if k.startswith(("KAFKA_S", "SCHEMA_REGISTRY_S"))}
    assert not extra
    env = set(rendered.env())
    assert env == {"ASKELEPHANT_API_KEY"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"schemaRegistry": {"url": "http://registry:8081", "tls": {"caSecret": "ca"}}},
            "is not https://",
        ),
        (
            {
                "kafka": {
                    "securityProtocol": "SSL",
                    "tls": {"caSecret": "ca", "mountPath": "/etc/tls"},
                },
                "schemaRegistry": {
                    "url": "https://registry:8081",
                    "tls": {"caSecret": "ca", "mountPath": "/etc/tls/"},
                },
            },
            "must differ",
        ),
    ],
    ids=["registry-tls-over-http", "same-mount-path"],
)
def test_inconsistent_registry_tls_is_refused(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    assert message in helm.template_error(values=merge(WITH_KEY, values))


def test_sasl_credentials_from_values_go_to_the_chart_secret(helm: Helm) -> None:
    rendered = helm.template([CI_FILE["all-features"]])
    data = decoded(rendered.one("Secret"))
    assert data["kafka-sasl-username"] == "ci-user"
    assert data["kafka-sasl-password"] == "not-a-real-secret"
    assert secret_ref(rendered.env()["KAFKA_SASL_PASSWORD"]) == (FULLNAME, "kafka-sasl-password")


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        # The values schema refuses this one before the template's own guard sees it.
        ({"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN"}}, "/kafka/sasl"),
        (
            {
                "securityProtocol": "PLAINTEXT",
                "sasl": {"mechanism": "PLAIN", "existingSecret": "s"},
            },
            "needs kafka.security",
        ),
        ({"securityProtocol": "SASL_SSL"}, "needs kafka.sasl.mechanism"),
        ({"tls": {"caSecret": "ca"}}, "does not use TLS"),
    ],
    ids=["no-credentials", "plaintext-with-sasl", "sasl-without-mechanism", "tls-plaintext"],
)
def test_inconsistent_kafka_security_is_refused(
    helm: Helm, kafka: dict[str, Any], message: str
) -> None:
    assert message in helm.template_error(values=merge(WITH_KEY, {"kafka": kafka}))


def test_checksums_follow_config_and_secret(helm: Helm) -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        annotations = helm.template(values=values).deployment["spec"]["template"]["metadata"]
        return {k: v for k, v in annotations["annotations"].items() if k.startswith("checksum/")}

    base = checksums(WITH_KEY)
    assert set(base) == {"checksum/config", "checksum/secret"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in base.values())

    config_changed = checksums(merge(WITH_KEY, {"config": {"pollIntervalSeconds": 30}}))
    assert config_changed["checksum/config"] != base["checksum/config"]
    assert config_changed["checksum/secret"] == base["checksum/secret"]

    secret_changed = checksums({"askelephant": {"apiKey": API_KEY + "-rotated"}})
    assert secret_changed["checksum/secret"] != base["checksum/secret"]
    assert secret_changed["checksum/config"] == base["checksum/config"]


# --------------------------------------------------------------------------- pod security


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_pod_security_restricted(helm: Helm, values_file: Path) -> None:
    rendered = helm.template([values_file])
    pod = rendered.pod_spec
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert "hostNetwork" not in pod
    container = rendered.container["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["runAsUser"] == 10001
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    for sa in rendered.all("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_tmp_is_the_only_writable_mount(helm: Helm) -> None:
    rendered = helm.template(values=WITH_KEY)
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    mounts = rendered.container["volumeMounts"]
    assert mounts == [{"name": "tmp", "mountPath": "/tmp"}]
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "64Mi"}


def test_tmp_volume_without_limits_is_still_an_empty_dir(helm: Helm) -> None:
    rendered = helm.template(values=merge(WITH_KEY, {"tmpVolume": {"sizeLimit": ""}}))
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {}


def test_resources_have_documented_defaults(helm: Helm) -> None:
    resources = helm.template(values=WITH_KEY).container["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert resources["limits"] == {"memory": "512Mi"}


def test_service_account_toggle(helm: Helm) -> None:
    created = helm.template(values=WITH_KEY)
    assert created.one("ServiceAccount")["metadata"]["name"] == FULLNAME
    assert created.pod_spec["serviceAccountName"] == FULLNAME
    external = helm.template(
        values=merge(WITH_KEY, {"serviceAccount": {"create": False, "name": "shared"}})
    )
    assert external.maybe("ServiceAccount") is None
    assert external.pod_spec["serviceAccountName"] == "shared"


def test_probes_use_the_metrics_port(helm: Helm) -> None:
    rendered = helm.template(values=WITH_KEY)
    container = rendered.container
    assert container["ports"] == [{"name": "http", "containerPort": 9108, "protocol": "TCP"}]
    assert rendered.config_env()["METRICS_PORT"] == "9108"
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["args"] == ["run"]


def test_metrics_port_is_configurable_everywhere(helm: Helm) -> None:
    values = merge(WITH_KEY, {"metrics": {"port": 9200, "serviceMonitor": {"enabled": True}}})
    rendered = helm.template(values=values)
    assert rendered.container["ports"][0]["containerPort"] == 9200
    assert rendered.config_env()["METRICS_PORT"] == "9200"
    assert rendered.one("Service", "-askelephant-kafka")["spec"]["ports"][0]["targetPort"] == "http"


# --------------------------------------------------------------------------- monitoring


def test_service_monitor(helm: Helm) -> None:
    rendered = helm.template([CI_FILE["all-features"]])
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    service = rendered.one("Service", "-askelephant-kafka")
    assert service["spec"]["ports"][0]["name"] == "http"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_pod_monitor(helm: Helm) -> None:
    values = merge(WITH_KEY, {"metrics": {"podMonitor": {"enabled": True, "interval": "1m"}}})
    rendered = helm.template(values=values)
    assert rendered.maybe("Service") is None
    (endpoint,) = rendered.one("PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint == {
        "port": "http",
        "path": "/metrics",
        "interval": "1m",
        "scrapeTimeout": "10s",
    }


def test_service_and_pod_monitor_together_are_refused(helm: Helm) -> None:
    values = merge(
        WITH_KEY,
        {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
    )
    assert "mutually exclusive" in helm.template_error(values=values)


def test_prometheus_rule_embeds_the_alerts_file(helm: Helm, promtool: Path, tmp_path: Path) -> None:
    rule = helm.template([CI_FILE["all-features"]]).one("PrometheusRule")
    groups = rule["spec"]["groups"]
    assert groups == load_yaml(CHART_DIR / "files" / "alerts.yml")["groups"]
    assert any("alert" in r for g in groups for r in g["rules"])
    # Prometheus' own {{ $labels.x }} templates are kept, not evaluated by Helm.
    rules_file = tmp_path / "extracted.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    result = subprocess.run(
        [str(promtool), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_grafana_dashboard_config_map(helm: Helm) -> None:
    rendered = helm.template([CI_FILE["all-features"]])
    config_map = rendered.one("ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "AskElephant"
    (content,) = config_map["data"].values()
    expected = json.loads((CHART_DIR / "files" / "dashboard.json").read_text(encoding="utf-8"))
    assert json.loads(content) == expected


def test_grafana_dashboard_label_is_configurable(helm: Helm) -> None:
    values = merge(
        WITH_KEY,
        {"grafanaDashboard": {"enabled": True, "label": "dashboards", "labelValue": "askel"}},
    )
    labels = helm.template(values=values).one("ConfigMap", "-dashboard")["metadata"]["labels"]
    assert labels["dashboards"] == "askel"
    assert "grafana_dashboard" not in labels


def test_network_policy(helm: Helm) -> None:
    open_policy = helm.template(values=merge(WITH_KEY, {"networkPolicy": {"enabled": True}}))
    spec = open_policy.one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert spec["egress"] == [{}]
    closed = helm.template([CI_FILE["all-features"]]).one("NetworkPolicy")["spec"]
    assert {"port": 53, "protocol": "UDP"} in closed["egress"][0]["ports"]
    assert len(closed["egress"]) == 3
    assert closed["ingress"][0]["from"][0]["namespaceSelector"]


# --------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 1}, "replicaCont"),
        ({"askelephant": {"apiKey": API_KEY, "apikey": API_KEY}}, "apikey"),
        ({"replicaCount": "1"}, "replicaCount"),
        ({"metrics": {"port": "http"}}, "port"),
        ({"config": {"pageSize": 500}}, "pageSize"),
        ({"config": {"resources": ["contacts", "deals"]}}, "resources"),
        ({"kafka": {"sasl": {"mechanism": "PLAINTEXT"}}}, "mechanism"),
        (
            {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512"}}},
            "existingSecret",
        ),
        (
            {
                "kafka": {
                    "securityProtocol": "SASL_SSL",
                    "sasl": {"mechanism": "PLAIN", "username": "u", "existingSecret": ""},
                }
            },
            "password",
        ),
        ({"schemaRegistry": {"tls": {"caSecret": "Not_A_Name"}}}, "caSecret"),
        ({"schemaRegistry": {"tls": {"caSecretKey": ""}}}, "caSecretKey"),
    ],
    ids=[
        "typo-top-level",
        "typo-nested",
        "wrong-type",
        "wrong-type-nested",
        "range",
        "enum",
        "sasl",
        "sasl-without-secret-name",
        "sasl-without-password",
        "registry-ca-bad-secret-name",
        "registry-ca-empty-key",
    ],
)
def test_values_schema_rejects(helm: Helm, values: dict[str, Any], message: str) -> None:
    error = helm.template_error(values=merge(WITH_KEY, values))
    assert "schema" in error.lower()
    assert message in error


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (CHART_DIR / "values.schema.json").read_text(encoding="utf-8")
    )
    return schema


def _schema_paths(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, sub-schema) of every property the schema declares."""
    for key, sub in node.get("properties", {}).items():
        yield path + key, sub
        yield from _schema_paths(sub, path + key + ".")


def value_leaves() -> dict[str, Any]:
    """The chart's values, down to the leaves the schema declares: maps the schema
    leaves free-form (labels, resources, kafka.config, ...) count as one value."""
    schema_nodes = dict(_schema_paths(_schema()))
    leaves: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        sub = schema_nodes.get(path, {}) if path else _schema()
        if isinstance(node, dict) and "properties" in sub:
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        else:
            leaves[path] = node

    walk(load_yaml(CHART_DIR / "values.yaml"), "")
    return leaves


def test_values_schema_is_strict_and_complete() -> None:
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    jsonschema.Draft7Validator(schema).validate(load_yaml(CHART_DIR / "values.yaml"))
    declared = dict(_schema_paths(schema))
    for path, sub in declared.items():
        assert "type" in sub, f"{path} has no type in values.schema.json"
        if "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{path} accepts unknown keys"
    # Every value has a schema entry and every schema entry a default in values.yaml.
    leaves = value_leaves()
    assert set(leaves) <= set(declared)
    declared_leaves = {p for p, sub in declared.items() if "properties" not in sub}
    assert declared_leaves - {"global"} == set(leaves)


def test_every_value_is_documented_in_the_readme() -> None:
    readme = (CHART_DIR / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", readme, re.M))
    leaves = value_leaves()
    missing = sorted(set(leaves) - set(table))
    assert not missing, f"values missing from the README table: {missing}"
    unknown = sorted(set(table) - set(leaves))
    assert not unknown, f"the README documents values that do not exist: {unknown}"


def test_every_value_has_a_comment_in_values_yaml() -> None:
    """Each leaf key of values.yaml has a comment line right above it (a key inside
    a commented default block, like securityContext, is covered by that block)."""
    lines = (CHART_DIR / "values.yaml").read_text(encoding="utf-8").splitlines()
    leaves = value_leaves()
    stack: list[tuple[int, str, bool]] = []  # (indent, dotted path, has comment)
    checked = 0
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = f"{stack[-1][1]}.{match.group(2)}" if stack else match.group(2)
        commented = index > 0 and lines[index - 1].lstrip().startswith("#")
        covered = any(c and p in leaves for _, p, c in stack)
        stack.append((indent, path, commented))
        if path in leaves and not covered:
            checked += 1
            assert commented, f"values.yaml:{index + 1}: `{path}` has no comment above it"
    assert checked == len(leaves)


def test_ci_values_cover_the_required_scenarios() -> None:
    assert set(CI_FILE) >= {"default", "existing-secret", "sasl-tls", "all-features"}
    default = load_yaml(CI_FILE["default"])
    assert default == {"askelephant": {"apiKey": default["askelephant"]["apiKey"]}}
    all_features = load_yaml(CI_FILE["all-features"])
    assert all_features["networkPolicy"]["enabled"] is True
    assert all_features["grafanaDashboard"]["enabled"] is True
    assert all_features["metrics"]["prometheusRule"]["enabled"] is True


def test_dead_letter_liveness_and_heartbeat_settings_reach_the_configmap(helm: Helm) -> None:
    values = merge(
        WITH_KEY,
        {
            "config": {
                "deadLetterPolicy": "fail",
                "maxMessageBytes": "2097152,engagements=8388608",
                "livenessStallSeconds": 900,
                "heartbeatTopic": "askelephant.heartbeats",
                "delivery": "exactly-once",
            }
        },
    )
    config = helm.template(values=values).config_env()
    assert config["DEAD_LETTER_POLICY"] == "fail"
    assert config["MAX_MESSAGE_BYTES"] == "2097152,engagements=8388608"
    assert config["DEAD_LETTER_MAX_MESSAGE_BYTES"] == contract_default(
        "DEAD_LETTER_MAX_MESSAGE_BYTES"
    )
    assert config["LIVENESS_STALL_SECONDS"] == "900"
    assert config["HEARTBEAT_TOPIC"] == "askelephant.heartbeats"
    assert config["DEAD_LETTER_TOPIC"] == ""  # derived from TOPIC_PREFIX by the producer
    assert config["DELIVERY"] == "exactly-once"
    assert config["BATCH_PAGES"] == contract_default("BATCH_PAGES")
    assert config["BACKFILL_SLICES"] == contract_default("BACKFILL_SLICES")
    assert config["API_MAX_REQUESTS_PER_SECOND"] == contract_default("API_MAX_REQUESTS_PER_SECOND")
    assert config["API_MAX_CONCURRENT_REQUESTS"] == contract_default("API_MAX_CONCURRENT_REQUESTS")
