"""Avro schema-resolution compatibility ("can a reader schema read writer data?").

Implements the resolution rules of the Avro specification the way the Java
`SchemaCompatibility` class (used by Confluent Schema Registry) applies them: matching names
(or reader aliases), record fields matched by name/alias with defaults for missing ones,
numeric and string/bytes promotions, enum symbols, fixed sizes, unions, arrays and maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


class InvalidSchemaError(ValueError):
    """The text is not a valid Avro schema."""


@dataclass(eq=False)
class Node:
    """A parsed Avro type; named types are shared objects, so recursion forms cycles."""

    type: str
    name: str = ""
    aliases: frozenset[str] = frozenset()
    fields: list[Field] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    default_symbol: str | None = None
    size: int = 0
    items: Node | None = None  # array items / map values
    branches: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class Field:
    name: str
    type: Node
    has_default: bool
    aliases: frozenset[str] = frozenset()


def _fullname(name: str, namespace: str) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


class _Parser:
    def __init__(self, named: dict[str, Node] | None = None) -> None:
        self.named: dict[str, Node] = dict(named or {})

    def parse(self, obj: Any, namespace: str = "") -> Node:
        if isinstance(obj, str):
            if obj in PRIMITIVES:
                return Node(type=obj)
            for candidate in (_fullname(obj, namespace), obj):
                if candidate in self.named:
                    return self.named[candidate]
            raise InvalidSchemaError(f"unknown type {obj!r}")
        if isinstance(obj, list):
            return Node(type="union", branches=[self.parse(b, namespace) for b in obj])
        if not isinstance(obj, dict) or "type" not in obj:
            raise InvalidSchemaError(f"not a schema: {obj!r}")
        kind = obj["type"]
        if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _COMPLEX):
            # {"type": "string", "logicalType": ...} or {"type": {...}} wrappers
            return self.parse(kind, namespace)
        if kind == "array":
            return Node(type="array", items=self.parse(obj.get("items"), namespace))
        if kind == "map":
            return Node(type="map", items=self.parse(obj.get("values"), namespace))
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidSchemaError(f"{kind} without a name")
        full = _fullname(name, obj.get("namespace") or namespace)
        inner_ns = full.rsplit(".", 1)[0] if "." in full else ""
        aliases = frozenset(_fullname(a, inner_ns) for a in obj.get("aliases") or [])
        node = Node(type=kind, name=full, aliases=aliases)
        if full in self.named:
            raise InvalidSchemaError(f"type {full!r} defined twice")
        self.named[full] = node
        if kind == "enum":
            node.symbols = list(obj.get("symbols") or [])
            node.default_symbol = obj.get("default")
        elif kind == "fixed":
            node.size = int(obj.get("size", -1))
        else:  # record / error
            for f in obj.get("fields") or []:
                node.fields.append(
                    Field(
                        name=f["name"],
                        type=self.parse(f["type"], inner_ns),
                        has_default="default" in f,
                        aliases=frozenset(f.get("aliases") or []),
                    )
                )
        return node


_COMPLEX = frozenset({"record", "error", "enum", "fixed", "array", "map"})


def parse(text: str, references: list[str] | None = None) -> Node:
    """Parse schema JSON text (plus referenced schema texts defining named types)."""
    named: dict[str, Node] = {}
    for ref in references or []:
        ref_parser = _Parser(named)
        ref_parser.parse(_loads(ref))
        named = ref_parser.named
    return _Parser(named).parse(_loads(text))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # A bare primitive name such as `string` is a valid schema too.
        if text.strip() in PRIMITIVES:
            return text.strip()
        raise InvalidSchemaError(f"not JSON: {text[:80]!r}") from None


def _names_match(reader: Node, writer: Node) -> bool:
    short = reader.name.rsplit(".", 1)[-1] == writer.name.rsplit(".", 1)[-1]
    return reader.name == writer.name or writer.name in reader.aliases or short


def incompatibilities(reader: Node, writer: Node) -> list[str]:
    """Why `reader` cannot read data written with `writer` (empty list: it can)."""
    problems: list[str] = []
    _check(reader, writer, "", problems, set())
    return problems


def _check(
    reader: Node, writer: Node, path: str, out: list[str], seen: set[tuple[int, int]]
) -> None:
    key = (id(reader), id(writer))
    if key in seen:  # recursive types: assume compatible on the second visit
        return
    seen.add(key)
    where = path or "/"
    if writer.type == "union":
        for i, branch in enumerate(writer.branches):
            _check(reader, branch, f"{path}/{i}", out, seen)
        return
    if reader.type == "union":
        for branch in reader.branches:
            trial: list[str] = []
            _check(branch, writer, path, trial, set(seen))
            if not trial:
                return
        out.append(f"{where}: reader union lacks a branch for writer type {writer.type}")
        return
    if reader.type != writer.type:
        if writer.type in _PROMOTIONS and reader.type in _PROMOTIONS[writer.type]:
            return
        out.append(f"{where}: reader type {reader.type} cannot read writer type {writer.type}")
        return
    if reader.type in PRIMITIVES:
        return
    if reader.type in {"array", "map"}:
        assert reader.items is not None
        assert writer.items is not None
        _check(reader.items, writer.items, f"{path}/items", out, seen)
        return
    if not _names_match(reader, writer):
        out.append(f"{where}: name {reader.name} does not match writer name {writer.name}")
        return
    if reader.type == "fixed":
        if reader.size != writer.size:
            out.append(f"{where}: fixed size {reader.size} != writer size {writer.size}")
    elif reader.type == "enum":
        missing = [s for s in writer.symbols if s not in reader.symbols]
        if missing and reader.default_symbol is None:
            out.append(f"{where}: reader enum {reader.name} lacks symbols {missing}")
    else:
        by_name = {f.name: f for f in writer.fields}
        for rf in reader.fields:
            wf = by_name.get(rf.name) or next(
                (by_name[a] for a in rf.aliases if a in by_name), None
            )
            if wf is None:
                if not rf.has_default:
                    out.append(f"{path}/{rf.name}: reader field has no default and is not written")
            else:
                _check(rf.type, wf.type, f"{path}/{rf.name}", out, seen)


def check_level(level: str, new: Node, existing: list[Node]) -> list[str]:
    """Problems registering `new` under a compatibility level, given the versions (oldest first)."""
    level = level.upper()
    if level == "NONE" or not existing:
        return []
    against = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    base = level.removesuffix("_TRANSITIVE")
    problems: list[str] = []
    for old in against:
        if base in {"BACKWARD", "FULL"}:
            problems += [f"BACKWARD {p}" for p in incompatibilities(new, old)]
        if base in {"FORWARD", "FULL"}:
            problems += [f"FORWARD {p}" for p in incompatibilities(old, new)]
    return problems
