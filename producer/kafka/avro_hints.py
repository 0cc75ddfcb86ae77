"""PURE: change events annotated with their union branches, so fastavro writes them faster.

fastavro picks the branch of a union value by validating it against each branch in turn; for
``after`` (``["null", <Resource>]``) and the nested ``["null", record | array]`` fields that
means a full validation of the record before it is written, i.e. every value checked twice.
Its tuple notation, ``(branch name, value)``, names the branch instead. The bytes are the same
(tests/unit/test_events_compiled.py compares them): the events come from ``conform``, which
already guarantees each value fits its schema, so the second check bought nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import fastavro

__all__ = ["Hinter", "identity", "union_hinter"]

Hinter = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def identity(event: Mapping[str, Any]) -> Mapping[str, Any]:
    return event


def _branch_name(branch: Any) -> str | None:
    """The name fastavro's tuple notation uses for a union branch worth naming."""
    if isinstance(branch, Mapping):
        kind = branch.get("type")
        if kind in ("record", "enum", "fixed"):
            return str(branch["name"])
        if kind in ("array", "map"):
            return str(kind)
    return None


def _single_branch(schema: Any) -> str | None:
    """For ``["null", X]`` with X a record, array or map: X's tuple-notation name."""
    if not isinstance(schema, list) or len(schema) != 2 or "null" not in schema:
        return None
    (branch,) = (b for b in schema if b != "null")
    return _branch_name(branch)


def union_hinter(schema_text: str) -> Hinter:
    """For the event schema `schema_text`: event -> the same event with ``after`` and its
    nullable record/array fields in tuple notation. The identity when the schema has no
    ``after`` of the expected shape (e.g. a foreign schema in a test)."""
    parsed = fastavro.parse_schema(json.loads(schema_text), expand=True)
    if not isinstance(parsed, dict):
        return identity
    after_field = next(
        (f for f in parsed.get("fields", ()) if isinstance(f, Mapping) and f["name"] == "after"),
        None,
    )
    after_name = None if after_field is None else _single_branch(after_field["type"])
    if after_field is None or after_name is None:
        return identity
    (record,) = (b for b in after_field["type"] if b != "null")
    if record.get("type") != "record":
        return identity
    nested = [
        (f["name"], name)
        for f in record["fields"]
        if (name := _single_branch(f["type"])) is not None
    ]

    def hint(event: Mapping[str, Any]) -> Mapping[str, Any]:
        after = event.get("after")
        if not isinstance(after, dict):  # None, or already hinted
            return event
        if nested:
            after = dict(after)
            for field, name in nested:
                value = after.get(field)
                if value is not None:
                    after[field] = (name, value)
        return {**event, "after": (after_name, after)}

    return hint
