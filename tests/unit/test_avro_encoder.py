"""The compiled Avro encoder writes fastavro's bytes, or refuses: never other bytes."""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.kafka.avro_encoder import NotCompilableError, NotEncodableError, compile_encoder

pytestmark = pytest.mark.unit

_LEAVES: list[Any] = [
    "null",
    "boolean",
    "int",
    "long",
    "float",
    "double",
    "string",
    "bytes",
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]},
    {"type": "fixed", "name": "F", "size": 4},
]


def _composites(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    field = st.tuples(inner, st.booleans())
    return st.one_of(
        st.builds(lambda items: {"type": "array", "items": items}, inner),
        st.builds(lambda values: {"type": "map", "values": values}, inner),
        inner.filter(lambda s: s != "null" and not isinstance(s, list)).flatmap(
            lambda s: st.sampled_from([["null", s], [s, "null"]])
        ),
        st.lists(field, min_size=0, max_size=5).map(
            lambda fields: {
                "type": "record",
                "name": "R",
                "fields": [
                    {"name": f"f{i}", "type": t, **({"default": None} if nullable else {})}
                    for i, (t, nullable) in enumerate(fields)
                    if not nullable or (isinstance(t, list) and t[0] == "null")
                ],
            }
        ),
    )


def _named_uniquely(schema: Any) -> Any:
    """Avro names must be unique within a schema: number every named type."""
    counter = itertools.count()

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(b) for b in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "name" in node:
            node["name"] = f"{node['name']}{next(counter)}"
        if node["type"] == "record":
            node["fields"] = [{**f, "type": walk(f["type"])} for f in node["fields"]]
        elif node["type"] == "array":
            node["items"] = walk(node["items"])
        elif node["type"] == "map":
            node["values"] = walk(node["values"])
        return node

    return walk(schema)


_SCHEMAS = st.recursive(st.sampled_from(_LEAVES), _composites, max_leaves=12).map(_named_uniquely)


def _valid(schema: Any) -> bool:
    try:
        fastavro.parse_schema(schema)
    except Exception:
        return False
    return True


_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


def _values(schema: Any) -> st.SearchStrategy[Any]:
    """Values that fit `schema`, with some junk mixed in at every level."""
    return st.one_of(_fitting(schema), _JUNK) if schema != "null" else st.none()


def _fitting(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of(*(_fitting(b) for b in schema))
    kind = schema["type"] if isinstance(schema, dict) else schema
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "string": st.text(max_size=200),
        "bytes": st.binary(max_size=200),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(_values(schema["items"]), max_size=140)
    if kind == "map":
        return st.dictionaries(st.text(max_size=3), _values(schema["values"]), max_size=4)
    assert kind == "record"
    return st.fixed_dictionaries(
        {},
        optional={f["name"]: _values(f["type"]) for f in schema["fields"]},
    )


def _fastavro(schema: Any, value: Any) -> bytes | None:
    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, fastavro.parse_schema(schema), value)
    except Exception:
        return None
    return out.getvalue()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_same_bytes_as_fastavro_or_refused(data: st.DataObject) -> None:
    schema = data.draw(_SCHEMAS.filter(_valid), label="schema")
    value = data.draw(_values(schema), label="value")
    encode = compile_encoder(schema)
    try:
        ours = encode(value)
    except NotEncodableError:
        return  # handed to the library, which writes it its way or refuses it
    assert ours == _fastavro(schema, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_values_that_fit_are_never_refused(data: st.DataObject) -> None:
    schema = data.draw(_SCHEMAS.filter(_valid), label="schema")
    value = data.draw(_fitting_only(schema), label="value")
    assert compile_encoder(schema)(value) == _fastavro(schema, value)


def _fitting_only(schema: Any) -> st.SearchStrategy[Any]:
    """Like `_fitting` with no junk anywhere, and every record field present."""
    if isinstance(schema, list):
        return st.one_of(*(_fitting_only(b) for b in schema))
    kind = schema["type"] if isinstance(schema, dict) else schema
    if kind == "array":
        return st.lists(_fitting_only(schema["items"]), max_size=140)
    if kind == "map":
        return st.dictionaries(st.text(max_size=3), _fitting_only(schema["values"]), max_size=4)
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: _fitting_only(f["type"]) for f in schema["fields"]}
        )
    return _fitting(schema)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (64, b"\x80\x01"),
     (-(2**63), b"\xff" * 9 + b"\x01"), (2**63 - 1, b"\xfe" + b"\xff" * 8 + b"\x01")],
)  # fmt: skip
def test_longs_are_zigzag_varints(value: int, encoded: bytes) -> None:
    assert compile_encoder("long")(value) == encoded


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ("long", 2**63),  # out of range: fastavro raises, so must we
        ("int", 2**31),
        ("long", True),  # a bool is an int to Python, not to Avro
        ("double", 1),  # fastavro converts; the library does it
        ("string", b"x"),
        ({"type": "long", "logicalType": "timestamp-millis"}, object()),
        (["null", "string"], 5),
        ({"type": "array", "items": "long"}, (1, 2)),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, "B"),
        ({"type": "fixed", "name": "F", "size": 2}, b"abc"),
        ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}, {}),
    ],
)
def test_what_it_does_not_vouch_for_is_refused(schema: Any, value: Any) -> None:
    with pytest.raises(NotEncodableError):
        compile_encoder(schema)(value)


def test_nan_is_written_as_fastavro_writes_it() -> None:
    assert compile_encoder("double")(math.nan) == _fastavro("double", math.nan)


@pytest.mark.parametrize(
    "schema",
    [
        ["null", "string", "long"],  # resolved by validation in fastavro
        ["string", "long"],
        ["null", ["null", "string"]],  # not Avro: a union directly inside a union
        {
            "type": "record",
            "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"]}],
        },
    ],
)
def test_what_it_does_not_compile_is_said_up_front(schema: Any) -> None:
    with pytest.raises(NotCompilableError):
        compile_encoder(schema)


@pytest.mark.parametrize("size", [0, 63, 64, 127, 128, 300, 20_000])
def test_lengths_and_counts_past_one_byte(size: int) -> None:
    for schema, value in [
        ("string", "é" * (size // 2) + "x" * (size % 2)),
        ("bytes", b"x" * size),
        ({"type": "array", "items": "boolean"}, [True] * size),
        ({"type": "map", "values": "null"}, {str(i): None for i in range(size)}),
    ]:
        assert compile_encoder(schema)(value) == _fastavro(schema, value)


def test_a_missing_field_is_written_as_its_default() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "a", "type": "string", "default": "x"},
            {"name": "b", "type": ["null", "long"], "default": None},
        ],
    }
    assert compile_encoder(schema)({}) == _fastavro(schema, {}) == b"\x02x\x00"
