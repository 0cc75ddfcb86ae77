"""The chart cannot offer a setting the application refuses: every enum of values.schema.json
and every number around the application's own bounds that the schema accepts is accepted by
`producer.config.load_settings` (a refused value is exit 2 and a crash-looping pod).

Pure: reads the schema and the ConfigMap template, no helm."""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from producer.config import ConfigError, _Model, load_settings
from producer.schemas import RESOURCES
from tests.deploy.conftest import CHART_DIR

pytestmark = pytest.mark.unit

SCHEMA: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text("utf-8"))
CONFIGMAP = (CHART_DIR / "templates" / "configmap.yaml").read_text("utf-8")
ENTRY = r"^  ([A-Z][A-Z0-9_]+): \{\{.*?\.Values\.([\w.]+)"
"""`  LOG_LEVEL: {{ .Values.config.logLevel | quote }}` -> LOG_LEVEL, config.logLevel"""
SECRETS = {"ASKELEPHANT_WEBHOOK_SECRET": "whsec_" + "Y2hhcnQtc2V0dGluZ3MtdGVzdA=="}
"""What the chart passes from its Secret; WEBHOOK_PORT needs it."""
FIELDS = {info.alias: info for info in _Model.model_fields.values()}


def chart_settings() -> Iterator[tuple[str, str]]:
    """(variable, values path) of each setting the ConfigMap takes from one chart value."""
    for env, path in re.findall(
        r"^  ([A-Z][A-Z0-9_]+): \{\{.*?\.Values\.([\w.]+)", CONFIGMAP, re.M
    ):
        if env in FIELDS:
            yield env, path


SETTINGS = sorted(chart_settings())


def schema_of(path: str) -> dict[str, Any]:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node


def refusal(env: str, value: str) -> str | None:
    """Why the application refuses `env=value`, or None when it accepts it."""
    try:
        load_settings({**SECRETS, env: value})
    except ConfigError as exc:
        return str(exc)
    return None


def app_bounds(env: str) -> list[float]:
    """The bounds of the application's range check(s) of `env` (`_between(low, high)`), and 0
    when it refuses zero: the values around which the schema must agree with it."""
    points: list[float] = []
    for check in FIELDS[env].metadata:
        func = getattr(check, "func", None)
        if func is None:
            continue
        names = inspect.getclosurevars(func).nonlocals
        points += [names[k] for k in ("low", "high") if k in names]
        if func.__name__ == "_not_zero":
            points.append(0)
    return points


def probes(env: str, integer: bool) -> set[float]:
    """Each bound, just inside and just outside it."""
    found: set[float] = set()
    for bound in app_bounds(env):
        step = 1 if integer else max(abs(bound) / 2, 0.001)
        found |= {bound - step, bound, bound + step}
    return found


def test_every_chart_setting_is_found() -> None:
    names = {env for env, _ in SETTINGS}
    assert {"LOG_LEVEL", "TOPIC_PARTITIONS", "MAX_RETRY_WAIT_SECONDS", "METRICS_PORT"} <= names


@pytest.mark.parametrize(("env", "path"), SETTINGS, ids=[env for env, _ in SETTINGS])
def test_the_chart_offers_only_values_the_application_accepts(env: str, path: str) -> None:
    node = schema_of(path)
    validator = jsonschema.Draft7Validator(node)
    if "enum" in node:
        allowed = typing.get_args(FIELDS[env].annotation)
        if allowed:  # a Literal: the same choices, neither more nor fewer
            assert set(node["enum"]) == set(allowed), f"{path}: {node['enum']} vs {allowed}"
        for value in node["enum"]:
            assert refusal(env, str(value)) is None, f"{path}={value!r}: {refusal(env, value)}"
    if node.get("type") == "array" and "enum" in node.get("items", {}):
        assert env == "RESOURCES"
        assert set(node["items"]["enum"]) == set(RESOURCES)
        assert refusal(env, ",".join(node["items"]["enum"])) is None
    if node.get("type") in ("integer", "number"):
        integer = node["type"] == "integer"
        checked = 0
        for value in sorted(probes(env, integer)):
            number: float = int(value) if integer else value
            if validator.is_valid(number):
                checked += 1
                why = refusal(env, str(number))
                assert why is None, f"{path}: the schema accepts {number}, the app says {why}"
        assert checked, f"{path}: no probe inside the application's bounds {app_bounds(env)}"


def test_the_chart_refuses_what_was_offered_before() -> None:
    """The values that crash-looped a pod (the schema itself must refuse them)."""
    config = SCHEMA["properties"]["config"]["properties"]
    assert not jsonschema.Draft7Validator(config["logLevel"]).is_valid("CRITICAL")
    assert not jsonschema.Draft7Validator(config["topicPartitions"]).is_valid(0)
    assert refusal("LOG_LEVEL", "CRITICAL") is not None
    assert refusal("TOPIC_PARTITIONS", "0") is not None
