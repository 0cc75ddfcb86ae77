"""The compiled fast path gives the reference's events, and the same Avro bytes (fastavro's, and
the compiled encoder's), for any record."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import schemas
from producer.events import EVENT_ID_NAMESPACE, RecordConformanceError, build_change_event
from producer.events_compiled import CompiledEventBuilder, event_id
from producer.kafka.avro_encoder import compile_encoder
from producer.sync.timestamps import instant_micros
from tests.unit.test_events import FULL, _json, _keys, _record

pytestmark = pytest.mark.unit

BUILDERS = {resource: CompiledEventBuilder(resource) for resource in schemas.RESOURCES}
ENCODERS = {
    resource: compile_encoder(schemas.load_schema(resource)) for resource in schemas.RESOURCES
}


def _context(**overrides: Any) -> dict[str, Any]:
    return {
        "run_id": "run-1",
        "producer_id": "askelephant-kafka",
        "api_version": "2026-03-01",
        "snapshot": False,
        "now_ms": 1_772_400_000_123,
        **overrides,
    }


def _avro(resource: str, event: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schemas.event_schema(resource), event)
    return out.getvalue()


@st.composite
def _records(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Records with fitting, null, omitted and mismatched values and unknown keys (nested
    too), a created_at equal to updated_at or not, and instants in various renderings."""
    resource = draw(st.sampled_from(schemas.RESOURCES))
    record, _ = draw(_record(schemas.record_schema(resource)))
    moment = draw(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
    updated_at = draw(
        st.sampled_from(
            [
                moment.isoformat(),
                moment.isoformat().replace("+00:00", "Z"),
                moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ]
        )
    )
    record["updated_at"] = updated_at
    record["created_at"] = draw(
        st.just(updated_at) | st.datetimes(timezones=st.just(UTC)).map(str) | _json
    )
    return resource, record


def _compiled(resource: str, record: Any, **kwargs: Any) -> dict[str, Any]:
    return BUILDERS[resource].build(record, **kwargs)


def _outcome(build: Any, resource: str, record: Any, **kwargs: Any) -> dict[str, Any] | str:
    """The event, or the message of the RecordConformanceError raised instead."""
    try:
        event: dict[str, Any] = build(resource, record, **kwargs)
    except RecordConformanceError as exc:
        return f"error: {exc}"
    return event


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records(), st.booleans())
def test_same_event_and_bytes_as_the_reference(
    case: tuple[str, dict[str, Any]], snapshot: bool
) -> None:
    resource, record = case
    context = _context(snapshot=snapshot)
    instant = instant_micros(record["updated_at"])
    expected = _outcome(build_change_event, resource, record, updated_at_us=instant, **context)
    if isinstance(expected, str):  # not an event: the same error
        assert _outcome(_compiled, resource, record, updated_at_us=instant, **context) == expected
        return
    built = BUILDERS[resource].build(record, updated_at_us=instant, **context)
    assert built == expected
    reference_bytes = _avro(resource, expected)
    assert _avro(resource, built) == reference_bytes
    assert ENCODERS[resource](built) == reference_bytes  # what the sink sends


@given(st.sampled_from(schemas.RESOURCES), _json)
def test_records_that_are_no_event_raise_the_references_error(resource: str, bad: Any) -> None:
    cases: list[Any] = [
        bad,
        {**FULL[resource], "id": bad if not isinstance(bad, str) or not bad else 1},
        {k: v for k, v in FULL[resource].items() if k != "updated_at"},
    ]
    for record in cases:
        with pytest.raises(RecordConformanceError) as expected:
            build_change_event(resource, record, updated_at_us=0, **_context())
        with pytest.raises(RecordConformanceError) as raised:
            BUILDERS[resource].build(record, updated_at_us=0, **_context())
        assert str(raised.value) == str(expected.value)


@given(st.sampled_from(schemas.RESOURCES), st.text(min_size=1), st.integers(-(2**63), 2**63))
def test_event_id_is_the_uuid5(resource: str, record_id: str, micros: int) -> None:
    name = f"{resource}\n{record_id}\n{micros}"
    try:
        expected = str(uuid.uuid5(EVENT_ID_NAMESPACE, name))
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            event_id(resource, record_id, micros)
        return
    assert event_id(resource, record_id, micros) == expected


def test_keys_strategy_is_shared() -> None:
    # the generated records reuse test_events' strategies; this keeps the import honest
    assert _keys is not None
