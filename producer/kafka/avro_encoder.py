"""PURE: Avro binary encoding compiled once per schema, for the values it can vouch for.

Why (issue 11, docs/performance.md): fastavro's ``schemaless_writer`` costs about 21 µs per
change event, most of it per-call and per-field dispatch (which writer, which union branch,
by validating the value against each branch), and was the largest single cost of a record.
Here a schema is turned once into a tree of small writers, one per field, so encoding an
event is a walk of plain closures: about 9 µs.

What keeps this honest:

* **Same bytes or no bytes.** A writer accepts only values whose encoding is unambiguous
  (exact types: ``str`` for string, ``int`` in range for int/long, ``True``/``False`` for
  boolean, ``None`` for null, a ``dict`` for a record, ...). Anything else raises
  :class:`NotEncodableError` and the caller hands the value to the library (confluent-kafka's
  ``AvroSerializer``), which writes it its way or raises its error. So logical types
  (timestamp-millis on an ``int``) come out as fastavro writes them, and a ``datetime`` goes
  to fastavro.
* **Only what it understands.** Unions of one type and null are compiled; a union of several
  non-null branches (fastavro resolves those by validation), a recursive record, or an
  unknown type raises :class:`NotCompilableError` and the whole schema stays with the library.
* tests/unit/test_avro_encoder.py holds the output against ``fastavro.schemaless_writer`` on
  generated schemas and values, and against ``AvroSerializer`` on the event schemas.

The Avro binary format: https://avro.apache.org/docs/1.11.1/specification/#binary-encoding
(variable-length zig-zag longs; strings and bytes as length + bytes; a union as branch index
+ value; arrays and maps as one counted block then a zero count).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

import fastavro

__all__ = ["Encoder", "NotCompilableError", "NotEncodableError", "compile_encoder"]

Writer = Callable[[bytearray, Any], None]
Encoder = Callable[[Any], bytes]

_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1


class NotCompilableError(Exception):
    """The schema uses something this module does not compile."""


class NotEncodableError(Exception):
    """The value is not one this encoder writes; let the library write it (or refuse it)."""


def _zigzag_varint(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL: Final = tuple(_zigzag_varint(n) for n in range(128))
"""The encodings of 0..127 (lengths, counts, small longs) looked up instead of computed."""


def _varint(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 128 else _zigzag_varint(n)


def _null(out: bytearray, value: Any) -> None:
    if value is not None:
        raise NotEncodableError


def _boolean(out: bytearray, value: Any) -> None:
    if value is True:
        out.append(1)
    elif value is False:
        out.append(0)
    else:
        raise NotEncodableError


def _integer(low: int, high: int) -> Writer:
    def write(out: bytearray, value: Any) -> None:
        if type(value) is not int or not low <= value <= high:
            raise NotEncodableError
        out += _SMALL[value] if 0 <= value < 128 else _zigzag_varint(value)

    return write


def _floating(fmt: str) -> Writer:
    pack = struct.Struct(fmt).pack

    def write(out: bytearray, value: Any) -> None:
        if type(value) is not float:
            raise NotEncodableError
        try:
            out += pack(value)
        except OverflowError:  # beyond a float32: fastavro refuses it too
            raise NotEncodableError from None

    return write


def _string(out: bytearray, value: Any) -> None:
    if type(value) is not str:
        raise NotEncodableError
    data = value.encode()
    size = len(data)
    out += _SMALL[size] if size < 128 else _zigzag_varint(size)
    out += data


def _nullable_string(null_index: bytes, value_index: bytes) -> Writer:
    def write(out: bytearray, value: Any) -> None:
        if value is None:
            out += null_index
            return
        if type(value) is not str:
            raise NotEncodableError
        data = value.encode()
        size = len(data)
        out += value_index
        out += _SMALL[size] if size < 128 else _zigzag_varint(size)
        out += data

    return write


def _bytes(out: bytearray, value: Any) -> None:
    if type(value) is not bytes:
        raise NotEncodableError
    out += _varint(len(value))
    out += value


_PRIMITIVES: Final[Mapping[str, Writer]] = {
    "null": _null,
    "boolean": _boolean,
    "int": _integer(_INT_MIN, _INT_MAX),
    "long": _integer(_LONG_MIN, _LONG_MAX),
    "float": _floating("<f"),
    "double": _floating("<d"),
    "string": _string,
    "bytes": _bytes,
}


class _Compiler:
    def __init__(self) -> None:
        self._open_records: set[str] = set()

    def writer(self, schema: Any) -> Writer:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            raise NotCompilableError(f"named type {schema!r} (parse with expand=True)")
        if isinstance(schema, list):
            return self._union(schema)
        if not isinstance(schema, Mapping):
            raise NotCompilableError(f"schema {schema!r}")
        kind = schema.get("type")
        if isinstance(kind, (list, Mapping)) or kind in _PRIMITIVES:
            return self.writer(kind)  # {"type": "long", "logicalType": ...} and wrappers
        if kind == "record":
            return self._record(schema)
        if kind == "array":
            return self._array(self.writer(schema["items"]))
        if kind == "map":
            return self._map(self.writer(schema["values"]))
        if kind == "enum":
            return self._enum(schema["symbols"])
        if kind == "fixed":
            return self._fixed(int(schema["size"]))
        raise NotCompilableError(f"type {kind!r}")

    def _union(self, branches: list[Any]) -> Writer:
        others = [b for b in branches if b != "null"]
        if len(others) != 1 or len(branches) != 2 or isinstance(others[0], list):
            raise NotCompilableError(f"union {branches!r}: only null and one other type compile")
        null_index = _SMALL[branches.index("null")]
        value_index = _SMALL[branches.index(others[0])]
        inner = self.writer(others[0])
        if inner is _string:  # most fields of an event: fused, one call instead of two
            return _nullable_string(null_index, value_index)

        def write(out: bytearray, value: Any) -> None:
            if value is None:
                out += null_index
            else:
                out += value_index
                inner(out, value)

        return write

    def _record(self, schema: Mapping[str, Any]) -> Writer:
        name = str(schema.get("name"))
        if name in self._open_records:
            raise NotCompilableError(f"recursive record {name}")
        self._open_records.add(name)
        # fastavro writes `datum.get(name, field default)`: the same look-up, planned once
        fields = tuple(
            (field["name"], field.get("default"), self.writer(field["type"]))
            for field in schema["fields"]
        )
        self._open_records.discard(name)

        def write(out: bytearray, value: Any) -> None:
            if type(value) is not dict:
                raise NotEncodableError
            get = value.get
            for field, default, field_writer in fields:
                field_writer(out, get(field, default))

        return write

    @staticmethod
    def _array(item: Writer) -> Writer:
        def write(out: bytearray, value: Any) -> None:
            if type(value) is not list:
                raise NotEncodableError
            if value:
                out += _varint(len(value))
                for element in value:
                    item(out, element)
            out.append(0)

        return write

    @staticmethod
    def _map(values: Writer) -> Writer:
        def write(out: bytearray, value: Any) -> None:
            if type(value) is not dict:
                raise NotEncodableError
            if value:
                out += _varint(len(value))
                for key, element in value.items():
                    _string(out, key)
                    values(out, element)
            out.append(0)

        return write

    @staticmethod
    def _enum(symbols: list[str]) -> Writer:
        indexes = {symbol: _varint(i) for i, symbol in enumerate(symbols)}

        def write(out: bytearray, value: Any) -> None:
            index = indexes.get(value) if type(value) is str else None
            if index is None:
                raise NotEncodableError
            out += index

        return write

    @staticmethod
    def _fixed(size: int) -> Writer:
        def write(out: bytearray, value: Any) -> None:
            if type(value) is not bytes or len(value) != size:
                raise NotEncodableError
            out += value

        return write


def compile_encoder(schema: Any) -> Encoder:
    """`schema`: an Avro schema (JSON text already loaded). Returns ``value -> bytes`` (the
    schemaless Avro body, no framing); raises :class:`NotCompilableError` for a schema it does not
    handle. The encoder raises :class:`NotEncodableError` for a value it does not vouch for."""
    root = _Compiler().writer(fastavro.parse_schema(schema, expand=True, _write_hint=False))

    def encode(value: Any) -> bytes:
        out = bytearray()
        root(out, value)
        return bytes(out)

    return encode
