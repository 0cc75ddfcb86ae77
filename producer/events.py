"""PURE: API record -> change-event dict conforming to ``schemas/<resource>.avsc``.

No I/O here except loading the schemas once through :mod:`producer.schemas` (cached) when the
caller does not pass one in.

* :func:`conform` walks a parsed Avro record schema generically and splits an API record into
  the typed part (what the schema knows, with values of the right type) and ``unknown``: every
  other part of the record, keyed by path, so nothing the API sent is lost.
* :func:`build_change_event` builds the whole event (see ``docs/events.md``).
* :func:`event_id_for` is the deterministic event id.
* :func:`reconstruct_record` is the inverse of :func:`conform` (reference for consumers).

Type mismatches. A value of a *nullable* field whose type does not fit the schema (e.g. a
string where a long is expected, an object where a string is expected) is NOT dropped and does
NOT fail the record: the typed field becomes null, the original value goes into
``unknown_fields`` under its path, and the path is listed, with the expected Avro type, under
the reserved key ``"$type_mismatch"`` (see :func:`type_mismatches`). This keeps the stream
flowing when the API changes a type, without losing data. Only a record that cannot be an
event at all raises :class:`RecordConformanceError`: not a JSON object, missing or non-string
``id``, missing or unparseable ``updated_at`` (or, generically, a bad value in any
non-nullable field).

Paths. The root has no prefix; an object key that is an identifier (``[A-Za-z_][A-Za-z0-9_]*``)
is written ``.key`` (``key`` at the root); any other key is written ``["<JSON string>"]``; an
array index is written ``[<n>]``. Examples: ``nickname``, ``crm_association.extra``,
``emails[0].label``, ``["odd key"].x``. Paths never start with ``$``.

Null versus absent. Avro has no "absent": a known field that the API omitted and one it sent as
``null`` are both null in the event (the API documents omission as "empty"). Unknown keys keep
their value as sent, ``null`` included.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from producer import schemas
from producer.sync.timestamps import InvalidTimestampError, parse_instant, to_micros

__all__ = [
    "EVENT_ID_NAMESPACE",
    "OP_CREATE",
    "OP_READ",
    "OP_UPDATE",
    "SYSTEM",
    "TYPE_MISMATCH_KEY",
    "RecordConformanceError",
    "build_change_event",
    "conform",
    "event_id_for",
    "format_path",
    "op_for",
    "parse_path",
    "reconstruct_record",
    "type_mismatches",
    "unknown_fields_json",
]

SYSTEM: Final = "askelephant"
OP_READ: Final = "r"
OP_CREATE: Final = "c"
OP_UPDATE: Final = "u"
TYPE_MISMATCH_KEY: Final = "$type_mismatch"

#: uuid5(NAMESPACE_URL, "https://docs.askelephant.ai/#askelephant-kafka/change-event"); fixed
#: forever: changing it changes every event id.
EVENT_ID_NAMESPACE: Final = uuid.UUID("9ce09643-0de5-5423-ad28-7643cc8f083f")

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


class RecordConformanceError(ValueError):
    """An API record that cannot become a change event (route it to the dead-letter path)."""

    def __init__(
        self,
        reason: str,
        *,
        resource: str | None = None,
        record_id: str | None = None,
        path: str | None = None,
    ) -> None:
        self.reason = reason
        self.resource = resource
        self.record_id = record_id
        self.path = path
        where = ", ".join(
            f"{label}={value!r}"
            for label, value in (("resource", resource), ("id", record_id), ("path", path))
            if value is not None
        )
        super().__init__(f"{reason} ({where})" if where else reason)


# --------------------------------------------------------------------------- ids and op


def _instant_micros(updated_at: str | datetime) -> int:
    if isinstance(updated_at, datetime):
        if updated_at.utcoffset() is None:
            raise InvalidTimestampError("naive datetime: an aware instant is required")
        return to_micros(updated_at)
    return to_micros(parse_instant(updated_at))


def event_id_for(resource: str, record_id: str, updated_at: str | datetime) -> str:
    """Deterministic event id: the same (resource, id, instant) always gives the same id.

    ``uuid5(EVENT_ID_NAMESPACE, f"{resource}\\n{record_id}\\n{updated_at_us}")`` where
    ``updated_at_us`` is the instant in integer microseconds since the epoch, UTC (digits past
    the microsecond truncated), i.e. the event's own ``updated_at_us`` field. So ``Z``,
    ``+00:00``, ``.000Z`` and ``+02:00`` renderings of one instant share an id.
    ``updated_at`` is a string parsed by ``producer.sync.timestamps.parse_instant`` or an
    aware datetime; raises ``InvalidTimestampError`` (a ``ValueError``) otherwise.
    """
    return _event_id(resource, record_id, _instant_micros(updated_at))


def _event_id(resource: str, record_id: str, updated_at_us: int) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{resource}\n{record_id}\n{updated_at_us}"))


def op_for(created_at: object, updated_at: str, *, snapshot: bool) -> str:
    """``r`` for a bulk-export read; else ``c`` if created_at == updated_at as instants; else ``u``.

    A missing, non-string or unparseable ``created_at`` gives ``u``. Instants are compared
    at microsecond precision (``producer.sync.timestamps.parse_instant``).
    """
    if snapshot:
        return OP_READ
    return _op(created_at, to_micros(parse_instant(updated_at)), snapshot=False)


def _op(created_at: object, updated_at_us: int, *, snapshot: bool) -> str:
    """:func:`op_for` with ``updated_at`` already parsed."""
    if snapshot:
        return OP_READ
    if isinstance(created_at, str):
        try:
            created = to_micros(parse_instant(created_at))
        except ValueError:
            return OP_UPDATE
        if created == updated_at_us:
            return OP_CREATE
    return OP_UPDATE


# --------------------------------------------------------------------------- paths


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def format_path(segments: Sequence[str | int]) -> str:
    """Path segments (object keys as ``str``, array indexes as ``int``) -> path string."""
    path = ""
    for segment in segments:
        path = _join(path, segment)
    return path


_DECODER: Final = json.JSONDecoder()


def parse_path(path: str) -> list[str | int]:
    """Path string (as used in ``unknown_fields``) -> segments; inverse of :func:`format_path`."""
    segments: list[str | int] = []
    pos, end = 0, len(path)
    while pos < end:
        if path.startswith("[", pos):
            if path.startswith('["', pos):
                try:
                    key, pos = _DECODER.raw_decode(path, pos + 1)
                except json.JSONDecodeError:
                    raise ValueError(f"bad path {path!r} at {pos}") from None
                if not isinstance(key, str):  # pragma: no cover - '"' guarantees a string
                    raise ValueError(f"bad path {path!r}")
                segments.append(key)
            else:
                close = path.find("]", pos)
                digits = path[pos + 1 : close] if close != -1 else ""
                if not (digits.isascii() and digits.isdigit()):
                    raise ValueError(f"bad path {path!r} at {pos}")
                segments.append(int(digits))
                pos = close
            if not path.startswith("]", pos):
                raise ValueError(f"bad path {path!r} at {pos}")
            pos += 1
            continue
        if segments:
            if not path.startswith(".", pos):
                raise ValueError(f"bad path {path!r} at {pos}")
            pos += 1
        match = _IDENTIFIER.match(path, pos)
        if match is None:
            raise ValueError(f"bad path {path!r} at {pos}")
        segments.append(match.group())
        pos = match.end()
    if not segments:
        raise ValueError("empty path")
    return segments


# --------------------------------------------------------------------------- conform


class _MismatchError(Exception):
    """Internal: a value does not fit its schema (caught at the nearest nullable field)."""


def _merge(into: dict[str, Any], found: dict[str, Any]) -> None:
    mismatches = found.pop(TYPE_MISMATCH_KEY, None)
    into.update(found)
    if mismatches:
        into.setdefault(TYPE_MISMATCH_KEY, {}).update(mismatches)


def _nullable(schema: Any) -> bool:
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "|".join(_describe(branch) for branch in schema if branch != "null") or "null"
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            return str(schema.get("name", kind))
        if kind == "array":
            return f"array<{_describe(schema.get('items'))}>"
        if kind == "map":
            return f"map<{_describe(schema.get('values'))}>"
        return _describe(kind)
    return str(schema)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (json.loads accepts "\ud800")
        return False
    return True


def _check_primitive(value: Any, kind: str) -> Any:
    ok: bool
    if kind == "string":
        ok = isinstance(value, str) and _encodable(value)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "long":
        ok = type(value) is int and _LONG_MIN <= value <= _LONG_MAX
    elif kind == "int":
        ok = type(value) is int and _INT_MIN <= value <= _INT_MAX
    elif kind in ("double", "float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "null":
        ok = value is None
    else:  # bytes, or a named type we cannot resolve: JSON has no value for it
        ok = False
    if not ok:
        raise _MismatchError
    return value


class _Walker:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self._named = named

    def value(self, value: Any, schema: Any, path: str, unknown: dict[str, Any]) -> Any:
        if isinstance(schema, list):
            return self._union(value, schema, path, unknown)
        if isinstance(schema, str):
            if schema in self._named:
                return self.value(value, self._named[schema], path, unknown)
            return _check_primitive(value, schema)
        kind = schema["type"]
        if kind == "record":
            if not isinstance(value, Mapping):
                raise _MismatchError
            return self.record(value, schema, path, unknown)
        if kind == "array":
            if not isinstance(value, list):
                raise _MismatchError
            return [
                self.value(item, schema["items"], _join(path, index), unknown)
                for index, item in enumerate(value)
            ]
        if kind == "map":
            if not isinstance(value, Mapping):
                raise _MismatchError
            return {
                key: self.value(item, schema["values"], _join(path, key), unknown)
                for key, item in value.items()
            }
        if kind == "enum":
            if not (isinstance(value, str) and value in schema["symbols"]):
                raise _MismatchError
            return value
        # primitive written as {"type": "long", "logicalType": ...} (or a named-type reference)
        return self.value(value, kind, path, unknown)

    def _union(self, value: Any, branches: list[Any], path: str, unknown: dict[str, Any]) -> Any:
        if value is None:
            if "null" in branches:
                return None
            raise _MismatchError
        for branch in branches:
            if branch == "null":
                continue
            trial: dict[str, Any] = {}
            try:
                converted = self.value(value, branch, path, trial)
            except _MismatchError:
                continue
            _merge(unknown, trial)
            return converted
        raise _MismatchError

    def record(
        self,
        value: Mapping[str, Any],
        schema: Mapping[str, Any],
        path: str,
        unknown: dict[str, Any],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in schema["fields"]:
            name, field_type = field["name"], field["type"]
            field_path = _join(path, name)
            if name not in value and "default" in field:
                out[name] = field["default"]
                continue
            raw = value.get(name)
            if raw is None and _nullable(field_type):
                out[name] = None
                continue
            nested: dict[str, Any] = {}
            try:
                out[name] = self.value(raw, field_type, field_path, nested)
            except _MismatchError:
                if not _nullable(field_type):
                    raise _MismatchError(field_path) from None
                out[name] = None
                unknown[field_path] = raw
                unknown.setdefault(TYPE_MISMATCH_KEY, {})[field_path] = _describe(field_type)
                continue
            _merge(unknown, nested)
        for key, extra in value.items():
            if key not in out:
                unknown[_join(path, key)] = extra
        return out


def conform(
    record: Any,
    record_schema: Mapping[str, Any],
    named_schemas: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``record`` into ``(typed, unknown)`` along a parsed Avro record schema.

    ``typed`` has every field of the schema (null when absent, null, or of the wrong type) and
    validates against ``record_schema``. ``unknown`` maps a path to each value the schema does
    not know or whose type does not fit; the latter are also listed, path -> expected type,
    under ``unknown[TYPE_MISMATCH_KEY]``. ``unknown`` is empty when nothing was left over.

    ``record_schema`` is a record schema as parsed by fastavro, ideally with named types
    expanded (``producer.schemas.record_schema``); references by name are resolved through
    ``named_schemas`` (or the schema's own ``__named_schemas``).
    Raises :class:`RecordConformanceError` if ``record`` is not a JSON object or a
    non-nullable field (``id``) is missing or of the wrong type.
    """
    if not isinstance(record, Mapping):
        raise RecordConformanceError(f"record is not a JSON object but {type(record).__name__}")
    named = named_schemas if named_schemas is not None else record_schema.get("__named_schemas")
    walker = _Walker(named or {})
    unknown: dict[str, Any] = {}
    try:
        typed = walker.record(record, record_schema, "", unknown)
    except _MismatchError as exc:
        path = str(exc.args[0]) if exc.args else None
        raise RecordConformanceError(
            "a required (non-nullable) field is missing or does not fit the schema", path=path
        ) from None
    return typed, unknown


def unknown_fields_json(unknown: Mapping[str, Any]) -> str | None:
    """The ``unknown_fields`` string for ``unknown`` (None when empty): compact, sorted keys."""
    if not unknown:
        return None
    return json.dumps(unknown, sort_keys=True, separators=(",", ":"))


def type_mismatches(event: Mapping[str, Any]) -> dict[str, str]:
    """Path -> expected Avro type of each value of ``event`` that did not fit the schema."""
    raw = event.get("unknown_fields")
    if not raw:
        return {}
    found = json.loads(raw).get(TYPE_MISMATCH_KEY) or {}
    return {str(path): str(expected) for path, expected in found.items()}


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _strip_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_strip_nulls(item) for item in value]
    return value


def reconstruct_record(
    typed: Mapping[str, Any] | None, unknown_fields: str | Mapping[str, Any] | None
) -> dict[str, Any]:
    """Inverse of :func:`conform`: the API record from ``after`` and ``unknown_fields``.

    Known fields that are null are left out (the API omits empty fields). Exact only when
    ``typed`` was read with the writer's schema (an older reader schema drops newer fields).
    """
    record: dict[str, Any] = _strip_nulls(dict(typed or {}))
    if isinstance(unknown_fields, str):
        unknown: Mapping[str, Any] = json.loads(unknown_fields)
    else:
        unknown = unknown_fields or {}
    for path, value in unknown.items():
        if path == TYPE_MISMATCH_KEY:
            continue
        *parents, last = parse_path(path)
        node: Any = record
        for segment in parents:
            node = node[segment] if isinstance(segment, int) else node.setdefault(segment, {})
        node[last] = value
    return record


# --------------------------------------------------------------------------- events


def build_change_event(
    resource: str,
    record: Any,
    *,
    run_id: str,
    producer_id: str,
    api_version: str | None,
    snapshot: bool,
    now_ms: int,
    record_schema: Mapping[str, Any] | None = None,
    updated_at_us: int | None = None,
) -> dict[str, Any]:
    """The change event (a dict fastavro writes with ``schemas.event_schema(resource)``).

    ``record`` is one item of the list response's ``data``; ``api_version`` the
    ``X-Api-Version`` header; ``snapshot`` True for a bulk export (op ``r``); ``now_ms`` the
    production time (epoch millis). ``record_schema`` defaults to
    ``schemas.record_schema(resource)``. ``updated_at_us`` is the instant of ``updated_at``
    when the caller already parsed it (``producer.sync.run.identify``): parsed once per record.
    Raises :class:`RecordConformanceError` when the record cannot be an event (see the module
    docstring).
    """
    if resource not in schemas.RESOURCES:
        raise ValueError(f"unknown resource {resource!r}")
    if not isinstance(record, Mapping):
        raise RecordConformanceError(
            f"record is not a JSON object but {type(record).__name__}", resource=resource
        )
    record_id = record.get("id")
    if not isinstance(record_id, str) or not record_id or not _encodable(record_id):
        raise RecordConformanceError(
            "missing, empty or non-string id", resource=resource, path="id"
        )
    updated_at = record.get("updated_at")
    if not isinstance(updated_at, str):
        raise RecordConformanceError(
            "missing or non-string updated_at",
            resource=resource,
            record_id=record_id,
            path="updated_at",
        )
    try:
        if updated_at_us is None:
            updated_at_us = to_micros(parse_instant(updated_at))
    except ValueError as exc:
        raise RecordConformanceError(
            f"unparseable updated_at: {exc}",
            resource=resource,
            record_id=record_id,
            path="updated_at",
        ) from None
    schema = record_schema if record_schema is not None else schemas.record_schema(resource)
    try:
        after, unknown = conform(record, schema)
    except RecordConformanceError as exc:
        raise RecordConformanceError(
            exc.reason, resource=resource, record_id=record_id, path=exc.path
        ) from None
    return {
        "event_id": _event_id(resource, record_id, updated_at_us),
        "op": _op(record.get("created_at"), updated_at_us, snapshot=snapshot),
        "ts_ms": now_ms,
        "source": {
            "system": SYSTEM,
            "resource": resource,
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
        "unknown_fields": unknown_fields_json(unknown),
    }
