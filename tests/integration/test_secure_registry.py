"""The producer with a schema registry behind HTTPS and basic auth (Apicurio's own TLS and
user store, started by devstack), over a SASL_SSL broker: everything secured at once, as a
managed deployment is. Settings as an operator gives them (docs/security.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from askelephant_simulator.server import Simulator
from devstack.registry import RunningRegistry
from devstack.tls import make_ca
from producer.config import load_settings
from tests.integration.conftest import latest_on
from tests.support.processes import cli, error_lines
from tests.support.secrets import REGISTRY_PASSWORD, assert_no_secret


def registry_variables(registry: RunningRegistry) -> dict[str, str]:
    return {
        "SCHEMA_REGISTRY_URL": registry.url,
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": registry.client_config["basic.auth.user.info"],
        "SCHEMA_REGISTRY_SSL_CA_LOCATION": registry.client_config["ssl.ca.location"],
    }


@pytest.mark.parametrize("secure_kafka", ["sasl_ssl"], indirect=True)
def test_a_sync_through_the_secured_registry(
    secure_env: Callable[..., dict[str, str]], secure_registry: RunningRegistry, sim: Simulator
) -> None:
    assert secure_registry.url.startswith("https://")
    env = secure_env(RESOURCES="tags", **registry_variables(secure_registry))
    result = cli(env, "sync")
    assert result.returncode == 0, result.stderr
    assert not error_lines(result), result.stderr
    # decoded with the schemas the secured registry holds
    assert set(latest_on(load_settings(env), "tags")) == set(sim.dataset.ids("tags"))
    assert_no_secret(result)


def _one_registry_error(env: dict[str, str], cause: str, url: str) -> str:
    result = cli(env, "sync")
    assert result.returncode == 1, result.stderr
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    [line] = errors
    assert f"schema registry at {url}: {cause} failed" in line
    assert "Traceback" not in result.stderr
    assert_no_secret(result)
    return line


@pytest.mark.parametrize("secure_kafka", ["sasl_ssl"], indirect=True)
def test_a_wrong_registry_password_is_one_error_line_naming_authentication(
    secure_env: Callable[..., dict[str, str]], secure_registry: RunningRegistry
) -> None:
    wrong = "askelephant-registry:Wrong-" + REGISTRY_PASSWORD[::-1]
    env = secure_env(
        RESOURCES="tags",
        **{**registry_variables(secure_registry), "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": wrong},
    )
    line = _one_registry_error(env, "authentication", secure_registry.url)
    assert "'askelephant-registry'" in line
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" in line
    assert wrong.split(":", 1)[1] not in line


@pytest.mark.parametrize("secure_kafka", ["sasl_ssl"], indirect=True)
def test_an_untrusted_registry_certificate_is_one_error_line_naming_trust(
    secure_env: Callable[..., dict[str, str]],
    secure_registry: RunningRegistry,
    tmp_path: Path,
) -> None:
    other = make_ca(tmp_path, "another-ca")
    env = secure_env(
        RESOURCES="tags",
        **{
            **registry_variables(secure_registry),
            "SCHEMA_REGISTRY_SSL_CA_LOCATION": str(other.cert),
        },
    )
    line = _one_registry_error(env, "TLS trust", secure_registry.url)
    assert "SCHEMA_REGISTRY_SSL_CA_LOCATION" in line
