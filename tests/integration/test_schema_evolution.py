"""Schema-evolution guard: the current schemas against every released one, on a real registry.

Consumers are promised FULL_TRANSITIVE compatibility (docs/events.md, "Compatibility
promise"): each released `.avsc` (tests/fixtures/released-schemas/<version>/) is registered
under a fresh subject set to that level, then the current `schemas/<resource>.avsc`. The
registry, not our reading of the Avro rules, decides whether the change is compatible.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from devstack import LocalStack
from producer import schemas

PROMISED_COMPATIBILITY = "FULL_TRANSITIVE"
RELEASED_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "released-schemas"


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


RELEASES = sorted((p.name for p in RELEASED_DIR.iterdir() if p.is_dir()), key=_version_key)


def _released(version: str, resource: str) -> str:
    return (RELEASED_DIR / version / f"{resource}.avsc").read_text(encoding="utf-8")


def _fresh_subject(registry: SchemaRegistryClient, resource: str) -> str:
    subject = f"evolution-{resource}-{uuid.uuid4().hex[:10]}-value"
    registry.set_compatibility(subject, PROMISED_COMPATIBILITY)
    return subject


def _register_releases(registry: SchemaRegistryClient, subject: str, resource: str) -> None:
    for version in RELEASES:
        registry.register_schema(subject, Schema(_released(version, resource), "AVRO"))


@pytest.fixture
def registry(local_stack: LocalStack) -> Any:
    with SchemaRegistryClient({"url": local_stack.schema_registry_url}) as client:
        yield client


def test_there_is_a_released_version_of_every_schema() -> None:
    assert RELEASES, f"no released schemas under {RELEASED_DIR}"
    for version in RELEASES:
        for resource in schemas.RESOURCES:
            assert (RELEASED_DIR / version / f"{resource}.avsc").is_file(), (version, resource)


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_current_schema_keeps_the_promised_compatibility(
    registry: SchemaRegistryClient, resource: str
) -> None:
    subject = _fresh_subject(registry, resource)
    _register_releases(registry, subject, resource)
    current = Schema(schemas.schema_str(resource), "AVRO")

    compatible = registry.test_compatibility(subject, current)

    assert compatible, (
        f"schemas/{resource}.avsc breaks {PROMISED_COMPATIBILITY} compatibility with a "
        f"released version ({', '.join(RELEASES)}); see docs/events.md, schema evolution rules"
    )
    # And the registry accepts it for real (a 409 here would fail the producer's start-up).
    registry.register_schema(subject, current)


def _with_required_field(schema_json: str) -> str:
    """The schema with a new field and no default: the change the guard must catch."""
    schema: dict[str, Any] = copy.deepcopy(json.loads(schema_json))
    schema["fields"].append({"name": "added_without_default", "type": "string"})
    return json.dumps(schema)


def test_guard_catches_a_field_added_without_a_default(registry: SchemaRegistryClient) -> None:
    resource = "contacts"
    subject = _fresh_subject(registry, resource)
    _register_releases(registry, subject, resource)
    breaking = Schema(_with_required_field(schemas.schema_str(resource)), "AVRO")

    assert not registry.test_compatibility(subject, breaking)
    with pytest.raises(SchemaRegistryError) as refused:
        registry.register_schema(subject, breaking)
    assert refused.value.http_status_code == 409
