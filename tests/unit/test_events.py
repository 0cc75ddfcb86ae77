"""producer/events.py: API record -> change event (pure)."""

from __future__ import annotations

import copy
import io
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import events, schemas
from producer.events import RecordConformanceError, build_change_event, conform, event_id_for
from producer.sync.timestamps import InvalidTimestampError, instant_micros

pytestmark = pytest.mark.unit

NOW_MS = 1_772_400_000_123
CRM = {"object_type": "account", "crm_object_id": "0015g00000XyZ", "source": "salesforce"}

FULL: dict[str, dict[str, Any]] = {
    "contacts": {
        "object": "contact",
        "id": "cnt_01HQY3JMS2QAXJGX6X7CH7CM6X",
        "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-04T18:25:00.123456Z",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "description": "Met at the conference",
        "company": {"id": "cmp_01HQXVB4Y9Y0Q6P0QH5GX2CT7T", "object": "company"},
        "emails": [
            {"email": "ada@example.com", "is_primary": True},
            {"email": "ada@home.example", "is_primary": False},
        ],
        "phone_numbers": [{"phone_number": "+1-555-0100", "is_primary": True}],
        "crm_association": CRM,
        "time_zone": "Europe/London",
    },
    "companies": {
        "object": "company",
        "id": "cmp_01HQXVB4Y9Y0Q6P0QH5GX2CT7T",
        "created_at": "2026-03-01T12:00:00.000Z",
        "updated_at": "2026-03-01T12:00:00.000Z",
        "name": "Analytical Engines Ltd",
        "description": "Machines",
        "industry": "Computing",
        "website": "https://engines.example",
        "number_of_employees": 12_000_000_000,
        "logo_url": "https://engines.example/logo.png",
        "crm_association": CRM,
        "domains": [{"domain": "engines.example", "is_primary": True}],
    },
    "users": {
        "object": "user",
        "id": "usr_01HQY3JMS2QAXJGX6X7CH7CM6Y",
        "role": "ADMIN",
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2026-03-04T18:25:00+01:00",
        "first_name": "Grace",
        "last_name": "Hopper",
        "job_title": "Rear Admiral",
        "emails": [{"email": "grace@example.com", "is_primary": True}],
        "time_zone": "America/New_York",
        "last_activity_at": "2026-03-05T08:00:00.5Z",
    },
    "tags": {
        "object": "tag",
        "id": "tag_01HQY3JMS2QAXJGX6X7CH7CM6Z",
        "name": "Champion",
        "created_at": "2026-02-01T10:00:00Z",
        "updated_at": "2026-02-02T10:00:00Z",
        "hex_color": "#A1B2C3",
        "description": "Internal champion identified",
        "auto_tagging_enabled": False,
    },
    "engagements": {
        "object": "engagement",
        "id": "ngmt_01HQY3JMS2QAXJGX6X7CH7CM70",
        "title": "Discovery call",
        "engagement_type": "MEETING",
        "processing_status": "COMPLETED",
        "is_private": False,
        "created_at": "2026-03-04T18:00:00Z",
        "updated_at": "2026-03-04T19:00:00.123456789Z",
        "description": "First call",
        "data_source": "zoom",
        "is_internal": False,
        "engagement_at": "2026-03-04T17:00:00Z",
        "start_at": "2026-03-04T17:00:00Z",
        "end_at": "2026-03-04T17:45:00Z",
        "duration_seconds": 2700,
        "meeting_url": "https://zoom.example/j/1",
        "external_url": "wavv://call/123",
        "crm_association": {"object_type": "opportunity", "crm_object_id": "42", "source": "hs"},
        "owner_user_id": "usr_01HQY3JMS2QAXJGX6X7CH7CM6Y",
        "host_user_id": "usr_01HQY3JMS2QAXJGX6X7CH7CM6Y",
    },
}


def minimal(resource: str) -> dict[str, Any]:
    full = FULL[resource]
    return {key: full[key] for key in ("id", "created_at", "updated_at")}


def build(resource: str, record: Any, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "run_id": "run-1",
        "producer_id": "askelephant-kafka",
        "api_version": "2026-03-01",
        "snapshot": False,
        "now_ms": NOW_MS,
    }
    kwargs.update(overrides)
    return build_change_event(resource, record, **kwargs)


def avro_round_trip(
    event: Mapping[str, Any], writer: Any, reader: Any | None = None
) -> dict[str, Any]:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer, event)
    buffer.seek(0)
    result = fastavro.schemaless_reader(buffer, writer, reader)
    assert isinstance(result, dict)
    return result


def as_read(event: Mapping[str, Any]) -> dict[str, Any]:
    """What fastavro's reader gives back for an event (logical types become datetimes)."""
    expected = copy.deepcopy(dict(event))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected["ts_ms"] = epoch + timedelta(milliseconds=event["ts_ms"])
    expected["updated_at_us"] = epoch + timedelta(microseconds=event["updated_at_us"])
    return expected


def unknown(event: Mapping[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(event["unknown_fields"] or "{}")
    return loaded


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize("resource", schemas.RESOURCES)
@pytest.mark.parametrize("shape", ["full", "minimal"])
def test_event_validates_and_round_trips(resource: str, shape: str) -> None:
    record = FULL[resource] if shape == "full" else minimal(resource)
    event = build(resource, record)
    schema = schemas.event_schema(resource)
    assert validate(event, schema, raise_errors=True)
    assert avro_round_trip(event, schema) == as_read(event)
    # nothing is lost and nothing unknown: the schema covers every documented field
    assert event["unknown_fields"] is None
    assert events.reconstruct_record(event["after"], event["unknown_fields"]) == record


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_envelope(resource: str) -> None:
    record = FULL[resource]
    event = build(resource, record)
    assert event["id"] == event["after"]["id"] == record["id"]
    assert event["updated_at"] == event["after"]["updated_at"] == record["updated_at"]
    assert event["updated_at_us"] == instant_micros(record["updated_at"])
    assert event["event_id"] == event_id_for(resource, record["id"], record["updated_at"])
    assert event["ts_ms"] == NOW_MS
    assert event["before"] is None
    assert event["source"] == {
        "system": "askelephant",
        "resource": resource,
        "api_version": "2026-03-01",
        "run_id": "run-1",
        "snapshot": False,
        "producer_id": "askelephant-kafka",
    }
    assert set(event["after"]) == {f["name"] for f in schemas.record_schema(resource)["fields"]}


def test_updated_at_kept_verbatim_and_micros_truncated() -> None:
    event = build("engagements", FULL["engagements"])
    assert event["updated_at"] == "2026-03-04T19:00:00.123456789Z"
    expected = datetime(2026, 3, 4, 19, 0, 0, 123456, tzinfo=UTC)
    assert event["updated_at_us"] == (expected - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )


def test_api_version_may_be_missing() -> None:
    event = build("tags", FULL["tags"], api_version=None)
    assert event["source"]["api_version"] is None
    assert validate(event, schemas.event_schema("tags"), raise_errors=True)


def test_the_input_record_is_not_modified() -> None:
    record = copy.deepcopy(FULL["contacts"])
    record["extra"] = {"a": [1, 2]}
    before = copy.deepcopy(record)
    build("contacts", record)
    assert record == before


def test_explicit_null_equals_absent() -> None:
    record = {**minimal("contacts"), "first_name": None, "company": None, "emails": None}
    event = build("contacts", record)
    assert event == build("contacts", minimal("contacts"))
    assert event["unknown_fields"] is None


def test_empty_containers_are_kept() -> None:
    record = {**minimal("contacts"), "emails": [], "company": {}}
    event = build("contacts", record)
    assert event["after"]["emails"] == []
    assert event["after"]["company"] == {"id": None, "object": None}
    assert events.reconstruct_record(event["after"], event["unknown_fields"]) == record


# --------------------------------------------------------------------------- unknown fields


def test_unknown_top_level_and_nested_keys_land_in_unknown_fields() -> None:
    record = copy.deepcopy(FULL["contacts"])
    record["nickname"] = "x"
    record["crm_association"]["extra"] = 1
    record["emails"][0]["label"] = "work"
    record["company"]["name"] = {"nested": [1, None]}
    record["odd key.with[brackets]"] = None
    event = build("contacts", record)
    assert unknown(event) == {
        "nickname": "x",
        "crm_association.extra": 1,
        "emails[0].label": "work",
        "company.name": {"nested": [1, None]},
        '["odd key.with[brackets]"]': None,
    }
    assert "nickname" not in event["after"]
    assert validate(event, schemas.event_schema("contacts"), raise_errors=True)
    assert events.type_mismatches(event) == {}
    assert events.reconstruct_record(event["after"], event["unknown_fields"]) == record


def test_values_of_the_wrong_type_are_kept_and_flagged() -> None:
    record = copy.deepcopy(FULL["companies"])
    record["number_of_employees"] = "50-100"
    record["name"] = 7
    record["domains"][0]["is_primary"] = "yes"
    record["crm_association"] = "salesforce:0015g"
    event = build("companies", record)
    after = event["after"]
    assert after["number_of_employees"] is None
    assert after["name"] is None
    assert after["domains"][0] == {"domain": "engines.example", "is_primary": None}
    assert after["crm_association"] is None
    assert events.type_mismatches(event) == {
        "number_of_employees": "long",
        "name": "string",
        "domains[0].is_primary": "boolean",
        "crm_association": "ai.askelephant.events.company.CrmAssociation",
    }
    found = unknown(event)
    assert found["number_of_employees"] == "50-100"
    assert found["name"] == 7
    assert found["domains[0].is_primary"] == "yes"
    assert found["crm_association"] == "salesforce:0015g"
    assert validate(event, schemas.event_schema("companies"), raise_errors=True)
    assert events.reconstruct_record(event["after"], event["unknown_fields"]) == record


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("number_of_employees", True, "long"),  # bool is not an integer here
        ("number_of_employees", 2**63, "long"),  # out of Avro long range
        ("number_of_employees", 12.0, "long"),  # floats are not coerced
        ("description", "\ud800", "string"),  # lone surrogate: not encodable as UTF-8
        ("description", ["a"], "string"),
        ("domains", {"domain": "x"}, "array<ai.askelephant.events.company.Domain>"),
        ("domains", ["x.example"], "array<ai.askelephant.events.company.Domain>"),
        ("domains", [None], "array<ai.askelephant.events.company.Domain>"),
    ],
)
def test_type_mismatch_cases(field: str, value: Any, expected: str) -> None:
    record = {**minimal("companies"), field: value}
    event = build("companies", record)
    assert event["after"][field] is None
    assert events.type_mismatches(event) == {field: expected}
    assert event["unknown_fields"].isascii()
    schema = schemas.event_schema("companies")
    read = avro_round_trip(event, schema)
    assert events.reconstruct_record(read["after"], read["unknown_fields"]) == record


def test_boolean_field_rejects_integers() -> None:
    event = build("tags", {**minimal("tags"), "auto_tagging_enabled": 1})
    assert events.type_mismatches(event) == {"auto_tagging_enabled": "boolean"}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("record", "path"),
    [
        ([{"id": "cnt_1"}], None),
        ("cnt_1", None),
        (None, None),
        ({"updated_at": "2026-03-01T12:00:00Z"}, "id"),
        ({"id": 1, "updated_at": "2026-03-01T12:00:00Z"}, "id"),
        ({"id": "", "updated_at": "2026-03-01T12:00:00Z"}, "id"),
        ({"id": None, "updated_at": "2026-03-01T12:00:00Z"}, "id"),
        ({"id": "cnt_\udc00", "updated_at": "2026-03-01T12:00:00Z"}, "id"),
        ({"id": "cnt_1"}, "updated_at"),
        ({"id": "cnt_1", "updated_at": None}, "updated_at"),
        ({"id": "cnt_1", "updated_at": 1772366400}, "updated_at"),
        ({"id": "cnt_1", "updated_at": "yesterday"}, "updated_at"),
        ({"id": "cnt_1", "updated_at": "2026-03-01T12:00:00"}, "updated_at"),  # no zone
        ({"id": "cnt_1", "updated_at": "2026-02-30T12:00:00Z"}, "updated_at"),
    ],
)
def test_records_that_cannot_be_events_raise(record: Any, path: str | None) -> None:
    with pytest.raises(RecordConformanceError) as caught:
        build("contacts", record)
    assert caught.value.path == path
    assert caught.value.resource == "contacts"
    assert isinstance(caught.value, ValueError)


def test_error_carries_the_record_id() -> None:
    with pytest.raises(RecordConformanceError, match="cnt_1") as caught:
        build("contacts", {"id": "cnt_1", "updated_at": "nope"})
    assert caught.value.record_id == "cnt_1"


def test_unknown_resource_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown resource"):
        build("meetings", minimal("contacts"))


def test_conform_rejects_non_objects_and_missing_required_fields() -> None:
    schema = schemas.record_schema("tags")
    with pytest.raises(RecordConformanceError, match="not a JSON object"):
        conform(["x"], schema)
    with pytest.raises(RecordConformanceError) as caught:
        conform({"name": "no id"}, schema)
    assert caught.value.path == "id"


# --------------------------------------------------------------------------- event id and op

SAME_INSTANT = [
    "2026-03-01T12:00:00Z",
    "2026-03-01T12:00:00+00:00",
    "2026-03-01T12:00:00.000Z",
    "2026-03-01T12:00:00.000000Z",
    "2026-03-01T12:00:00.000000000Z",
    "2026-03-01T14:00:00+02:00",
    "2026-03-01T07:00:00-05:00",
    "2026-03-01t12:00:00z",
]


def test_event_id_is_stable_across_renderings_of_one_instant() -> None:
    ids = {event_id_for("contacts", "cnt_1", text) for text in SAME_INSTANT}
    ids.add(event_id_for("contacts", "cnt_1", datetime(2026, 3, 1, 12, tzinfo=UTC)))
    assert len(ids) == 1
    (only,) = ids
    assert uuid.UUID(only).version == 5
    events_ = {
        build("contacts", {"id": "cnt_1", "updated_at": t})["event_id"] for t in SAME_INSTANT
    }
    assert events_ == ids


def test_event_id_is_the_documented_uuid5() -> None:
    micros = 1_772_366_400_000_000  # 2026-03-01T12:00:00Z
    expected = uuid.uuid5(events.EVENT_ID_NAMESPACE, f"contacts\ncnt_1\n{micros}")
    assert event_id_for("contacts", "cnt_1", "2026-03-01T12:00:00Z") == str(expected)
    namespace = uuid.uuid5(
        uuid.NAMESPACE_URL, "https://docs.askelephant.ai/#askelephant-kafka/change-event"
    )
    assert namespace == events.EVENT_ID_NAMESPACE


def test_event_id_differs_for_other_instants_ids_and_resources() -> None:
    base = event_id_for("contacts", "cnt_1", "2026-03-01T12:00:00Z")
    assert event_id_for("contacts", "cnt_1", "2026-03-01T12:00:00.000001Z") != base
    assert event_id_for("contacts", "cnt_1", "2026-03-01T12:00:01Z") != base
    assert event_id_for("contacts", "cnt_2", "2026-03-01T12:00:00Z") != base
    assert event_id_for("companies", "cnt_1", "2026-03-01T12:00:00Z") != base
    # sub-microsecond digits are truncated: same id (documented)
    assert event_id_for("contacts", "cnt_1", "2026-03-01T12:00:00.000000999Z") == base


def test_event_id_does_not_depend_on_the_run() -> None:
    first = build("tags", FULL["tags"], run_id="a", now_ms=1, snapshot=True)
    second = build("tags", FULL["tags"], run_id="b", now_ms=2, snapshot=False)
    assert first["event_id"] == second["event_id"]


def test_event_id_rejects_bad_instants() -> None:
    with pytest.raises(ValueError, match="naive"):
        event_id_for("contacts", "cnt_1", datetime(2026, 3, 1, 12))
    with pytest.raises(InvalidTimestampError):
        event_id_for("contacts", "cnt_1", "2026-03-01")


@pytest.mark.parametrize("created_at", SAME_INSTANT)
def test_op_c_when_created_equals_updated_as_instants(created_at: str) -> None:
    record = {"id": "cnt_1", "created_at": created_at, "updated_at": "2026-03-01T12:00:00Z"}
    assert build("contacts", record)["op"] == "c"


@pytest.mark.parametrize(
    "created_at",
    ["2026-03-01T11:59:59.999999Z", "2026-03-01T12:00:00.000001Z", None, "garbage", 5],
)
def test_op_u_otherwise(created_at: Any) -> None:
    record = {"id": "cnt_1", "updated_at": "2026-03-01T12:00:00Z"}
    if created_at is not None:
        record["created_at"] = created_at
    assert build("contacts", record)["op"] == "u"


def test_op_r_for_a_bulk_export_whatever_the_timestamps() -> None:
    created = {"id": "cnt_1", "created_at": "2026-03-01T12:00:00Z"}
    for updated_at in ("2026-03-01T12:00:00Z", "2026-03-02T12:00:00Z"):
        event = build("contacts", {**created, "updated_at": updated_at}, snapshot=True)
        assert event["op"] == "r"
        assert event["source"]["snapshot"] is True


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("segments", "text"),
    [
        (["nickname"], "nickname"),
        (["crm_association", "extra"], "crm_association.extra"),
        (["emails", 0, "label"], "emails[0].label"),
        (["a b", "c"], '["a b"].c'),
        (["x", "y.z", 12, "_k9"], 'x["y.z"][12]._k9'),
        (["", '"]'], '[""]["\\"]"]'),
        (["9lives"], '["9lives"]'),
        (["$type_mismatch"], '["$type_mismatch"]'),
    ],
)
def test_paths(segments: list[str | int], text: str) -> None:
    assert events.format_path(segments) == text
    assert events.parse_path(text) == segments


@pytest.mark.parametrize(
    "text", ["", "a.", ".a", "a..b", "a[x]", "a[1", "a b", '["a"', '["a', "a]", "[-1]"]
)
def test_bad_paths(text: str) -> None:
    with pytest.raises(ValueError, match="path"):
        events.parse_path(text)


_keys = st.text(max_size=6)


@given(st.lists(st.one_of(_keys, st.integers(0, 10**6)), min_size=1, max_size=5))
def test_paths_round_trip(segments: list[str | int]) -> None:
    text = events.format_path(segments)
    assert not text.startswith("$")
    assert events.parse_path(text) == segments


# --------------------------------------------------------------------------- generic walker


def test_conform_resolves_named_references() -> None:
    # In the unexpanded parsed schema "after" refers to the record by name.
    event_schema = schemas.event_schema("contacts")
    after = next(f for f in event_schema["fields"] if f["name"] == "after")
    reference = after["type"][1]
    assert isinstance(reference, str)
    named = event_schema["__named_schemas"]
    record = {**FULL["contacts"], "extra": 1}
    assert conform(record, named[reference], named) == conform(
        record, schemas.record_schema("contacts")
    )


def test_conform_handles_other_avro_types() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [
                {"name": "i", "type": ["null", "int"], "default": None},
                {"name": "d", "type": ["null", "double"], "default": None},
                {"name": "m", "type": ["null", {"type": "map", "values": "long"}], "default": None},
                {
                    "name": "e",
                    "type": ["null", {"type": "enum", "name": "E", "symbols": ["A", "B"]}],
                    "default": None,
                },
                {"name": "s", "type": ["null", "long", "string"], "default": None},
                {"name": "b", "type": ["null", "bytes"], "default": None},
                {"name": "k", "type": "string", "default": "dflt"},
            ],
        }
    )
    assert isinstance(schema, dict)
    typed, found = conform(
        {"i": 2**31, "d": 1, "m": {"a": 1, "b x": 2}, "e": "A", "s": "x", "b": "AA=="}, schema
    )
    assert typed == {
        "i": None, "d": 1, "m": {"a": 1, "b x": 2}, "e": "A", "s": "x", "b": None, "k": "dflt",
    }  # fmt: skip
    assert found == {"i": 2**31, "b": "AA==", "$type_mismatch": {"i": "int", "b": "bytes"}}
    typed, found = conform({"i": 1, "d": True, "m": {"a": "1"}, "e": "C", "s": 3}, schema)
    assert typed == {"i": 1, "d": None, "m": None, "e": None, "s": 3, "b": None, "k": "dflt"}
    assert found["$type_mismatch"] == {"d": "double", "m": "map<long>", "e": "E"}


def test_mismatches_from_several_array_items_are_all_reported() -> None:
    record = {
        **minimal("contacts"),
        "emails": [
            {"email": 1, "is_primary": True},
            {"email": "b@example.com", "is_primary": "no"},
        ],
    }
    event = build("contacts", record)
    assert events.type_mismatches(event) == {
        "emails[0].email": "string",
        "emails[1].is_primary": "boolean",
    }
    assert events.reconstruct_record(event["after"], event["unknown_fields"]) == record


# --------------------------------------------------------------------------- schema evolution


def _v2(resource: str) -> dict[str, Any]:
    """The schema a future release might register: one new optional field per level."""
    schema = schemas.load_schema(resource)
    before = next(f for f in schema["fields"] if f["name"] == "before")
    before["type"][1]["fields"].append(
        {"name": "nickname", "type": ["null", "string"], "default": None}
    )
    schema["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    return schema


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_new_writer_old_reader(resource: str) -> None:
    v1 = schemas.event_schema(resource)
    v2 = fastavro.parse_schema(_v2(resource))
    event = build(resource, FULL[resource])
    newer = copy.deepcopy(event)
    newer["after"]["nickname"] = "Addie"
    newer["region"] = "eu"
    assert avro_round_trip(newer, v2, v1) == as_read(event)


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_old_writer_new_reader(resource: str) -> None:
    v1 = schemas.event_schema(resource)
    v2 = fastavro.parse_schema(_v2(resource))
    event = build(resource, FULL[resource])
    expected = as_read(event)
    expected["after"]["nickname"] = None
    expected["region"] = None
    assert avro_round_trip(event, v1, v2) == expected


# --------------------------------------------------------------------------- property

_LONG = (-(2**63), 2**63 - 1)
_OMIT = object()
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=6,
)
# A lone surrogate, as json.loads makes from "\ud800" (a pair of escapes decodes to one
# astral character, so two adjacent surrogates cannot come from JSON).
_surrogates = st.tuples(st.text(max_size=2), st.characters(categories=["Cs"])).map("".join)
_not_container = st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4)


def _branch(schema: Any) -> Any:
    return next(b for b in schema if b != "null") if isinstance(schema, list) else schema


def _wrong(schema: Any) -> st.SearchStrategy[Any]:
    """Values that certainly do not fit ``schema`` (never None)."""
    kind = _branch(schema)
    if isinstance(kind, Mapping):
        kind = kind["type"]
    containers = st.lists(_json, max_size=2) | st.dictionaries(_keys, _json, max_size=2)
    if kind == "string":
        return st.booleans() | st.integers() | st.floats(allow_nan=False) | containers | _surrogates
    if kind == "long":
        too_big = st.integers(min_value=_LONG[1] + 1) | st.integers(max_value=_LONG[0] - 1)
        return (
            st.booleans() | st.text(max_size=4) | st.floats(allow_nan=False) | too_big | containers
        )
    if kind == "boolean":
        return st.integers() | st.text(max_size=4) | st.floats(allow_nan=False) | containers
    if kind == "record":
        return _not_container | st.lists(_json, max_size=2)
    if kind == "array":
        with_scalar = st.lists(_json, max_size=2).flatmap(
            lambda items: _not_container.map(lambda bad: [*items, bad])
        )
        return _not_container | st.dictionaries(_keys, _json, max_size=2) | with_scalar
    raise AssertionError(kind)  # pragma: no cover


@st.composite
def _fitting(draw: st.DrawFn, schema: Any) -> tuple[Any, Any]:
    """(value, expected after reconstruction) for a value that fits ``schema``."""
    kind = _branch(schema)
    if isinstance(kind, Mapping) and kind["type"] == "record":
        return draw(_record(kind))
    if isinstance(kind, Mapping) and kind["type"] == "array":
        pairs = draw(st.lists(_record(kind["items"]), max_size=3))
        return [value for value, _ in pairs], [expected for _, expected in pairs]
    value = draw(
        {
            "string": st.text(max_size=8),
            "long": st.integers(*_LONG),
            "boolean": st.booleans(),
        }[kind]
    )
    return value, value


@st.composite
def _record(draw: st.DrawFn, schema: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    value: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    names = {f["name"] for f in schema["fields"]}
    for field in schema["fields"]:
        name, kind = field["name"], field["type"]
        if name == "id" and not isinstance(kind, list):
            value[name] = expected[name] = draw(st.text(min_size=1, max_size=8))
            continue
        choice = draw(st.sampled_from(["omit", "null", "fit", "fit", "wrong"]))
        if choice == "null":
            value[name] = None
        elif choice == "fit":
            value[name], expected[name] = draw(_fitting(kind))
        elif choice == "wrong":
            value[name] = expected[name] = draw(_wrong(kind))
    extras = draw(st.dictionaries(_keys.filter(lambda k: k not in names), _json, max_size=2))
    value.update(extras)
    expected.update(extras)
    return value, expected


@st.composite
def _api_records(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any]]:
    resource = draw(st.sampled_from(schemas.RESOURCES))
    record, expected = draw(_record(schemas.record_schema(resource)))
    instant = draw(st.datetimes(timezones=st.just(UTC))).isoformat()
    record["updated_at"] = expected["updated_at"] = instant
    return resource, record, expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_api_records())
def test_conform_then_rebuild_loses_nothing(case: tuple[str, dict[str, Any], Any]) -> None:
    resource, record, expected = case
    original = copy.deepcopy(record)
    event = build(resource, record)
    assert record == original
    schema = schemas.event_schema(resource)
    assert validate(event, schema, raise_errors=True)
    assert event["unknown_fields"] is None or event["unknown_fields"].isascii()
    read = avro_round_trip(event, schema)  # what a consumer gets
    assert events.reconstruct_record(read["after"], read["unknown_fields"]) == expected
    # the typed part is exactly the part that fits: a second pass finds nothing unknown
    typed_again, unknown_again = conform(read["after"], schemas.record_schema(resource))
    assert typed_again == read["after"]
    assert unknown_again == {}


# --------------------------------------------------------------------------- wire format


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_confluent_serializer_round_trip(resource: str) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    registry = SchemaRegistryClient.new_client({"url": f"mock://{resource}"})
    context = SerializationContext(f"askelephant.{resource}", MessageField.VALUE)
    event = build(resource, {**FULL[resource], "nickname": "x"})
    payload = AvroSerializer(registry, schemas.schema_str(resource))(event, context)
    assert payload is not None
    assert payload[0] == 0  # Confluent wire format: magic byte, 4-byte schema id, Avro body
    assert registry.get_subjects() == [f"askelephant.{resource}-value"]
    assert AvroDeserializer(registry)(payload, context) == as_read(event)
