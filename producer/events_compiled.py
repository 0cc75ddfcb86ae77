"""PURE: a fast path for :func:`producer.events.build_change_event`, compiled once per schema.

The reference (:mod:`producer.events`) walks the parsed Avro schema generically for every
record: it dispatches on the schema's shape, and builds the path string of every field of every
record, although a path is only ever written out for an unknown or mismatched value. Here each
record schema is compiled once into a flat list of field plans (name, kind, nullability,
default, a converter for nested types), so the common case is a loop of dict look-ups and type
checks; paths stay lazy ``(parent, key)`` pairs and become strings only when a value lands in
``unknown_fields`` (or an error message).

The output is the reference's, bit for bit: the same event dict, so the same Avro bytes
(tests/unit/test_events_compiled.py holds the two against each other on generated records,
mismatches and unknown fields included). Anything this module does not compile (a union of
several non-null branches, a reference by name) is handed to the reference walker for that
subtree, and any record that cannot be an event is rebuilt by the reference, which raises its
exact :class:`~producer.events.RecordConformanceError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from producer import schemas
from producer.events import (
    EVENT_ID_NAMESPACE,
    OP_CREATE,
    OP_READ,
    SYSTEM,
    TYPE_MISMATCH_KEY,
    _describe,
    _encodable,
    _join,
    _merge,
    _MismatchError,
    _op,
    _Walker,
    build_change_event,
    unknown_fields_json,
)

__all__ = ["CompiledEventBuilder", "event_id"]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

# A path is "" (the root), a finished string, or a (parent, key) pair turned into a string
# only when something has to be written under it.
LazyPath = str | tuple[Any, str | int]
Converter = Callable[[Any, LazyPath, dict[str, Any]], Any]
"""(value, path, unknown) -> the value as the schema wants it; raises _MismatchError."""

# field kinds checked inline in the record loop (no call); OTHER calls the field's converter
_STRING, _BOOLEAN, _LONG, _OTHER = 0, 1, 2, 3
_INLINE: Final = {"string": _STRING, "boolean": _BOOLEAN, "long": _LONG}
_PRIMITIVES: Final = frozenset(("string", "boolean", "long", "int", "double", "float", "null"))

_NAMESPACE_BYTES: Final = EVENT_ID_NAMESPACE.bytes


def event_id(resource: str, record_id: str, updated_at_us: int) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{resource}\\n{record_id}\\n{updated_at_us}"))``
    without building a UUID object (the same RFC 4122 bits, set by hand)."""
    digest = bytearray(
        hashlib.sha1(  # noqa: S324 - uuid5 is defined on SHA-1; not a security use
            _NAMESPACE_BYTES + f"{resource}\n{record_id}\n{updated_at_us}".encode()
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def materialise(path: LazyPath) -> str:
    """The path string of the reference (``producer.events.format_path``)."""
    if isinstance(path, str):
        return path
    parent, key = path
    return _join(materialise(parent), key)


def _nullable(schema: Any) -> bool:
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _primitive_check(kind: str) -> Callable[[Any], bool]:
    if kind == "string":
        return lambda v: isinstance(v, str) and (v.isascii() or _encodable(v))
    if kind == "boolean":
        return lambda v: isinstance(v, bool)
    if kind == "long":
        return lambda v: type(v) is int and _LONG_MIN <= v <= _LONG_MAX
    if kind == "int":
        return lambda v: type(v) is int and _INT_MIN <= v <= _INT_MAX
    if kind in ("double", "float"):
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    if kind == "null":
        return lambda v: v is None
    return lambda _v: False  # bytes: JSON has no value for it


class _Compiler:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self._walker = _Walker(named)
        self._named = named

    def generic(self, schema: Any) -> Converter:
        """The reference walker for a subtree this compiler does not specialise."""
        walker = self._walker

        def convert(value: Any, path: LazyPath, unknown: dict[str, Any]) -> Any:
            return walker.value(value, schema, materialise(path), unknown)

        return convert

    def compile(self, schema: Any) -> tuple[Converter, bool]:
        """A converter for `schema`, and whether it can add to `unknown` (records inside)."""
        if isinstance(schema, list):
            branches = [branch for branch in schema if branch != "null"]
            if len(branches) != 1:  # several typed branches: try them as the reference does
                return self.generic(schema), True
            inner, may_add = self.compile(branches[0])
            if "null" not in schema:
                return inner, may_add

            def nullable(value: Any, path: LazyPath, unknown: dict[str, Any]) -> Any:
                if value is None:
                    return None
                return inner(value, path, unknown)

            return nullable, may_add
        if isinstance(schema, str):
            if schema in self._named or (schema not in _PRIMITIVES and schema != "bytes"):
                return self.generic(schema), True
            check = _primitive_check(schema)

            def primitive(value: Any, path: LazyPath, unknown: dict[str, Any]) -> Any:
                if check(value):
                    return value
                raise _MismatchError

            return primitive, False
        kind = schema["type"]
        if kind == "record":
            return self.record(schema), True
        if kind == "array":
            return self.array(schema["items"])
        if kind == "map":
            return self.map(schema["values"])
        if kind == "enum":
            symbols = frozenset(schema["symbols"])

            def enum(value: Any, path: LazyPath, unknown: dict[str, Any]) -> Any:
                if isinstance(value, str) and value in symbols:
                    return value
                raise _MismatchError

            return enum, False
        return self.compile(kind)  # {"type": "long", "logicalType": ...}

    def array(self, items: Any) -> tuple[Converter, bool]:
        item, may_add = self.compile(items)
        if not may_add:  # the item paths are never written: do not make them

            def plain(value: Any, path: LazyPath, unknown: dict[str, Any]) -> Any:
                if not isinstance(value, list):
                    raise _MismatchError
                return [item(element, path, unknown) for element in value]

            return plain, False

        def array(value: Any, path: LazyPath, unknown: dict[str, Any]) -> Any:
            if not isinstance(value, list):
                raise _MismatchError
            return [item(element, (path, index), unknown) for index, element in enumerate(value)]

        return array, True

    def map(self, values: Any) -> tuple[Converter, bool]:
        item, may_add = self.compile(values)

        def mapping(value: Any, path: LazyPath, unknown: dict[str, Any]) -> Any:
            if not isinstance(value, Mapping):
                raise _MismatchError
            return {key: item(element, (path, key), unknown) for key, element in value.items()}

        return mapping, may_add

    def record(self, schema: Mapping[str, Any]) -> Converter:
        plans = []
        for field in schema["fields"]:
            field_type = field["type"]
            nullable = _nullable(field_type)
            typed = [b for b in field_type if b != "null"] if isinstance(field_type, list) else []
            single = typed[0] if len(typed) == 1 else field_type
            inline = _INLINE.get(single, _OTHER) if isinstance(single, str) else _OTHER
            if isinstance(single, str) and single in self._named:
                inline = _OTHER
            convert, may_add = self.compile(field_type)
            plans.append(
                (
                    field["name"],
                    inline,
                    nullable,
                    "default" in field,
                    field.get("default"),
                    convert,
                    may_add,
                    _describe(field_type),
                )
            )
        names = frozenset(plan[0] for plan in plans)

        def record(value: Any, path: LazyPath, unknown: dict[str, Any]) -> dict[str, Any]:
            if not isinstance(value, Mapping):
                raise _MismatchError
            out: dict[str, Any] = {}
            present = 0
            for name, inline, nullable, has_default, default, convert, may_add, expected in plans:
                if name in value:
                    present += 1
                    raw = value[name]
                elif has_default:
                    out[name] = default
                    continue
                else:
                    raw = None
                if raw is None and nullable:
                    out[name] = None
                    continue
                if inline == _STRING:
                    if isinstance(raw, str) and (raw.isascii() or _encodable(raw)):
                        out[name] = raw
                        continue
                elif inline == _BOOLEAN:
                    if isinstance(raw, bool):
                        out[name] = raw
                        continue
                elif inline == _LONG:
                    if type(raw) is int and _LONG_MIN <= raw <= _LONG_MAX:
                        out[name] = raw
                        continue
                elif may_add:
                    nested: dict[str, Any] = {}
                    try:
                        out[name] = convert(raw, (path, name), nested)
                    except _MismatchError:
                        pass
                    else:
                        if nested:
                            _merge(unknown, nested)
                        continue
                else:
                    try:
                        out[name] = convert(raw, path, unknown)
                    except _MismatchError:
                        pass
                    else:
                        continue
                # the value does not fit: null plus the original under its path, as the
                # reference does (or the whole record fails for a non-nullable field)
                field_path = _join(materialise(path), name)
                if not nullable:
                    raise _MismatchError(field_path)
                out[name] = None
                unknown[field_path] = raw
                unknown.setdefault(TYPE_MISMATCH_KEY, {})[field_path] = expected
            if present != len(value):
                prefix = materialise(path)
                for key, extra in value.items():
                    if key not in names:
                        unknown[_join(prefix, key)] = extra
            return out

        return record


class CompiledEventBuilder:
    """``build_change_event`` for one resource with its schema compiled once."""

    def __init__(self, resource: str, record_schema: Mapping[str, Any] | None = None) -> None:
        if resource not in schemas.RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")
        self.resource = resource
        self._schema = (
            record_schema if record_schema is not None else schemas.record_schema(resource)
        )
        named = self._schema.get("__named_schemas") or {}
        self._root = _Compiler(named).record(self._schema)

    def build(
        self,
        record: Any,
        *,
        run_id: str,
        producer_id: str,
        api_version: str | None,
        snapshot: bool,
        now_ms: int,
        updated_at_us: int,
    ) -> dict[str, Any]:
        """What ``build_change_event(..., updated_at_us=updated_at_us)`` returns (or raises);
        `updated_at_us` must be the instant of the record's ``updated_at`` (as
        ``producer.sync.run.identify`` parsed it)."""
        record_id = record.get("id") if isinstance(record, dict) else None
        updated_at = record.get("updated_at") if isinstance(record, dict) else None
        after: dict[str, Any] | None = None
        if (
            isinstance(record_id, str)
            and record_id
            and (record_id.isascii() or _encodable(record_id))
            and isinstance(updated_at, str)
        ):
            unknown: dict[str, Any] = {}
            try:
                after = self._root(record, "", unknown)
            except _MismatchError:
                after = None
        if after is None:  # not an event: the reference raises its exact error
            return build_change_event(
                self.resource,
                record,
                run_id=run_id,
                producer_id=producer_id,
                api_version=api_version,
                snapshot=snapshot,
                now_ms=now_ms,
                record_schema=self._schema,
                updated_at_us=updated_at_us,
            )
        assert isinstance(record_id, str)
        assert isinstance(updated_at, str)
        created_at = record.get("created_at")
        if snapshot:
            op = OP_READ
        elif created_at == updated_at:  # the same text is the same instant: no second parse
            op = OP_CREATE
        else:
            op = _op(created_at, updated_at_us, snapshot=False)
        return {
            "event_id": event_id(self.resource, record_id, updated_at_us),
            "op": op,
            "ts_ms": now_ms,
            "source": {
                "system": SYSTEM,
                "resource": self.resource,
                "api_version": api_version,
                "run_id": run_id,
                "snapshot": snapshot,
                "producer_id": producer_id,
            },
            "id": record_id,
            "updated_at": updated_at,
            "updated_at_us": updated_at_us,
            "before": None,
            "after": after,
            "unknown_fields": unknown_fields_json(unknown) if unknown else None,
        }
