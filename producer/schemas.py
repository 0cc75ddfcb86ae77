"""Locate, load and parse the Avro value schemas (``schemas/<resource>.avsc``).

The ``.avsc`` files at the root of the repository are the single source of truth. They are
found, in this order:

1. ``producer/_schemas/`` inside the installed package. In a source checkout this is a
   symlink to ``../schemas``; setuptools follows it when building the sdist and the wheel,
   so an installed package carries real copies (package-data ``_schemas/*.avsc``).
2. ``<checkout>/schemas/`` next to the ``producer`` package, when that directory is a source
   checkout of this project (a ``pyproject.toml`` beside it). This covers editable installs
   and checkouts whose symlink was not materialised (e.g. Git on Windows).

Each file is self-contained (it defines every named type it uses), so it can be registered
alone with a Schema Registry under ``<topic>-value``.

Reading happens once per resource (results are cached); nothing here touches Kafka or the
network.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import fastavro

__all__ = [
    "RESOURCES",
    "SchemaNotFoundError",
    "event_schema",
    "load_schema",
    "record_schema",
    "schema_dir",
    "schema_str",
]

RESOURCES: Final[tuple[str, ...]] = ("contacts", "companies", "users", "tags", "engagements")

_PACKAGE: Final = "producer"
_PACKAGE_SUBDIR: Final = "_schemas"
_MARKER: Final = "contacts.avsc"


class SchemaNotFoundError(FileNotFoundError):
    """The schema directory or a resource's ``.avsc`` file could not be found."""


def _candidates() -> Iterator[tuple[str, Traversable]]:
    yield "package data", resources.files(_PACKAGE).joinpath(_PACKAGE_SUBDIR)
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        yield "source checkout", root / "schemas"


@functools.cache
def schema_dir() -> Traversable:
    """The directory holding the ``.avsc`` files (see the module docstring for the order)."""
    looked: list[str] = []
    for label, candidate in _candidates():
        if candidate.joinpath(_MARKER).is_file():
            return candidate
        looked.append(f"{label}: {candidate}")
    raise SchemaNotFoundError(
        "Avro schemas not found; looked in " + "; ".join(looked or ["<nowhere>"])
    )


def _check_resource(resource: str) -> None:
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource {resource!r}; expected one of {', '.join(RESOURCES)}")


@functools.cache
def schema_str(resource: str) -> str:
    """The text of ``<resource>.avsc`` (what to hand to the Schema Registry serializer).

    Surrounding whitespace is stripped because confluent-kafka's AvroSerializer strips it
    before it looks the schema up: a registry that matches lookups on the exact text
    (Apicurio Registry does) would otherwise answer 40403 for the schema just registered.
    """
    _check_resource(resource)
    path = schema_dir().joinpath(f"{resource}.avsc")
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise SchemaNotFoundError(f"schema file missing: {path}") from exc


def load_schema(resource: str) -> dict[str, Any]:
    """The JSON-decoded (unparsed) schema; a fresh copy the caller may modify."""
    loaded: dict[str, Any] = json.loads(schema_str(resource))
    return loaded


@functools.cache
def event_schema(resource: str) -> dict[str, Any]:
    """The change-event schema parsed by ``fastavro.parse_schema`` (for writing/validating).

    Cached and shared: do not modify it.
    """
    parsed = fastavro.parse_schema(load_schema(resource))
    if not isinstance(parsed, dict):  # pragma: no cover - a record schema parses to a dict
        raise TypeError(f"{resource}.avsc is not a record schema")
    return parsed


@functools.cache
def record_schema(resource: str) -> dict[str, Any]:
    """The parsed schema of the resource object itself (the record inside ``after``).

    Named types are fully expanded, so it can be walked without a name table (this is what
    ``producer.events.conform`` expects). Cached and shared: do not modify it.
    """
    expanded = fastavro.parse_schema(load_schema(resource), expand=True)
    if not isinstance(expanded, dict):  # pragma: no cover - a record schema parses to a dict
        raise TypeError(f"{resource}.avsc is not a record schema")
    for field in expanded["fields"]:
        if field["name"] == "after":
            for branch in field["type"]:
                if isinstance(branch, dict) and branch.get("type") == "record":
                    return branch
    raise ValueError(f"{resource}.avsc: no record branch in field 'after'")  # pragma: no cover
