"""TLS settings: the registry's (SCHEMA_REGISTRY_SSL_*) and Kafka's certificate files
(KAFKA_SSL_*_LOCATION), and naming why a registry call failed, without a broker or a
registry (the real ones: tests/integration/test_secure_kafka.py, test_secure_registry.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from producer.cli import main
from producer.config import ConfigError, load_settings
from producer.kafka.connect import registry_problem

KEY = "sk-apik_abc.s3cr3tvalue"


def test_the_files_reach_the_registry_client_under_its_own_names(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN-----\n")
    settings = load_settings(
        {
            "ASKELEPHANT_API_KEY": KEY,
            "SCHEMA_REGISTRY_URL": "https://registry.example:8081",
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "svc:pw-registry-xyz",
            "SCHEMA_REGISTRY_SSL_CA_LOCATION": str(ca),
            "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(cert),
            "SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(key),
        }
    )
    assert settings.registry_config() == {
        "url": "https://registry.example:8081",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
        "basic.auth.user.info": "svc:pw-registry-xyz",
    }


def test_without_them_the_client_gets_none() -> None:
    settings = load_settings({"ASKELEPHANT_API_KEY": KEY, "SCHEMA_REGISTRY_SSL_CA_LOCATION": ""})
    assert settings.registry_config() == {"url": "http://localhost:8081"}


def test_a_missing_file_or_a_key_without_its_certificate_is_a_config_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"SCHEMA_REGISTRY_SSL_CA_LOCATION=.*no such file"):
        load_settings(
            {"ASKELEPHANT_API_KEY": KEY, "SCHEMA_REGISTRY_SSL_CA_LOCATION": "/nonexistent.pem"}
        )
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN-----\n")
    with pytest.raises(ConfigError, match="SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION is not"):
        load_settings({"ASKELEPHANT_API_KEY": KEY, "SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(key)})


def test_refused_credentials_are_authentication_naming_the_user_only() -> None:
    refused = SchemaRegistryError(401, -1, "Unauthorized")
    problem = registry_problem(refused, "svc:pw-registry-xyz")
    assert problem is not None
    assert problem.cause == "authentication"
    assert "'svc'" in str(problem)
    assert "pw-registry-xyz" not in f"{problem} {problem.check}"


def _wrapped(verify_code: int, message: str) -> Exception:
    """A TLS failure as the registry client's HTTP library raises it: wrapped."""
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_code, error.verify_message = verify_code, message
    try:
        try:
            raise error
        except ssl.SSLError as exc:
            raise ConnectionError("connect failed") from exc
    except ConnectionError as outer:
        return outer


def test_a_refused_registry_certificate_is_trust_or_hostname() -> None:
    trust = registry_problem(_wrapped(20, "unable to get local issuer certificate"), None)
    assert trust is not None
    assert trust.cause == "TLS trust"
    hostname = registry_problem(_wrapped(62, "Hostname mismatch"), None)
    assert hostname is not None
    assert hostname.cause == "TLS hostname verification"
    assert registry_problem(ConnectionError("refused"), None) is None
    assert registry_problem(SchemaRegistryError(500, 50001, "boom"), None) is None


def test_a_kafka_certificate_file_that_does_not_exist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CA_LOCATION=/nonexistent.pem: no such"):
        load_settings({"ASKELEPHANT_API_KEY": KEY, "KAFKA_SSL_CA_LOCATION": "/nonexistent.pem"})
    # librdkafka's own search for the system's CAs is no path
    probe = load_settings({"ASKELEPHANT_API_KEY": KEY, "KAFKA_SSL_CA_LOCATION": "probe"})
    assert probe.kafka_properties["ssl.ca.location"] == "probe"


def test_a_certificate_file_librdkafka_cannot_read_is_one_configuration_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    for name, value in {
        "ASKELEPHANT_API_KEY": KEY,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # never reached: the client is refused first
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_LOCATION": str(garbage),
        "LOG_FORMAT": "text",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["checkpoints"]) == 2
    err = capsys.readouterr().err
    [line] = err.splitlines()
    # librdkafka's words after the prefix vary with its OpenSSL; the property is named
    assert line.startswith("configuration error: KAFKA_* settings: ")
    assert "ssl.ca.location" in line
