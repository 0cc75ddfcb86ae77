"""Fixtures wiring the real broker and registry (tests/conftest.py) to the simulator."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from askelephant_simulator.server import Simulator
from devstack.kafka import RunningKafka
from producer.app import App, build_app
from producer.config import Settings, load_settings
from producer.kafka.reader import latest_per_key, read_topic


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7, records_per_resource=150) as simulator:
        yield simulator


@pytest.fixture
def make_env(local_stack: Any, sim: Simulator) -> Callable[..., dict[str, str]]:
    """Environment for a fresh, isolated producer (own topics, checkpoint topic and id)."""
    tag = uuid.uuid4().hex[:8]

    def make(**overrides: str) -> dict[str, str]:
        return {
            "ASKELEPHANT_API_URL": sim.base_url,
            "ASKELEPHANT_API_KEY": sim.api_key,
            "KAFKA_BOOTSTRAP_SERVERS": local_stack.bootstrap_servers,
            "SCHEMA_REGISTRY_URL": local_stack.schema_registry_url,
            "TOPIC_PREFIX": f"it-{tag}.",
            "CHECKPOINT_TOPIC": f"it-{tag}.checkpoints",
            "PRODUCER_ID": f"it-{tag}",
            "METRICS_PORT": "0",
            "LOG_FORMAT": "text",
            "MAX_RETRY_WAIT_SECONDS": "20",
            **overrides,
        }

    return make


def kafka_variables(client_config: Mapping[str, str]) -> dict[str, str]:
    """librdkafka properties as the producer takes them: `KAFKA_<PROPERTY>` variables."""
    return {
        f"KAFKA_{name.upper().replace('.', '_')}": value for name, value in client_config.items()
    }


@pytest.fixture
def secure_env(
    make_env: Callable[..., dict[str, str]], secure_kafka: RunningKafka
) -> Callable[..., dict[str, str]]:
    """`make_env` for the secured broker of `secure_kafka`'s mode (SASL_SSL or mutual TLS),
    its security settings passed as an operator would: `KAFKA_*` variables."""

    def make(**overrides: str) -> dict[str, str]:
        secured = {
            "KAFKA_BOOTSTRAP_SERVERS": secure_kafka.bootstrap_servers,
            **kafka_variables(secure_kafka.client_config),
        }
        return make_env(**{**secured, **overrides})

    return make


@pytest.fixture
def make_app(make_env: Callable[..., dict[str, str]]) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(**overrides: str) -> App:
        app = build_app(load_settings(make_env(**overrides)))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def events_on(settings: Settings, resource: str) -> list[Any]:
    with SchemaRegistryClient(settings.registry_config()) as registry:
        return read_topic(settings.kafka_config(), registry, settings.topic_for(resource))


def latest_on(settings: Settings, resource: str) -> dict[str, dict[str, Any]]:
    return latest_per_key(events_on(settings, resource))
