"""Parsing (pure): a 2xx list response -> :class:`Page`, strict about the list envelope."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from producer.api.errors import REQUEST_ID_HEADERS, ApiProtocolError, NotJsonError
from producer.api.retry import parse_http_date

__all__ = ["Page", "parse_page"]


@dataclass(frozen=True)
class Page:
    """One parsed list page plus the response metadata worth keeping."""

    records: list[Any]
    """The `data` items as parsed (normally objects; the sync rejects any other)."""
    has_more: bool
    next_cursor: str | None
    api_version: str | None = None  # X-Api-Version header, format undocumented
    server_date: datetime | None = None  # Date header, aware UTC
    request_id: str | None = None  # X-Request-Id / Request-Id header, if any
    body: bytes | None = field(default=None, repr=False, compare=False)
    """The response body as received: dead letters cut records from it byte for byte."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, dict) else type(value).__name__
    )


def _header(headers: httpx.Headers, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_page(
    resource: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    redact: Callable[[str], str] = lambda text: text,
) -> Page:
    """Parse a 2xx list response; raise :class:`ApiProtocolError` on any envelope violation.

    Expected (docs/askelephant-api.md §2.3): ``{"object": "list", "data": [{...}], "has_more": bool,
    "next_cursor": str | null}``, and a non-empty `next_cursor` whenever `has_more` is true.
    A malformed body is never treated as an empty page.
    """
    hdrs = httpx.Headers(headers)
    request_id = _header(hdrs, REQUEST_ID_HEADERS)
    content_type = hdrs.get("content-type")

    def fail(problem: str, kind: type[ApiProtocolError] = ApiProtocolError) -> ApiProtocolError:
        return kind(
            resource,
            redact(problem),
            status=status,
            request_id=redact(request_id) if request_id else None,
            content_type=content_type,
        )

    if not body:
        raise fail("empty body, expected a JSON list envelope", NotJsonError)
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(
            f"body is not valid JSON ({exc.__class__.__name__}: {exc})", NotJsonError
        ) from None
    if not isinstance(doc, dict):
        raise fail(f"body is a JSON {_type_name(doc)}, expected an object")
    missing = [k for k in ("object", "data", "has_more", "next_cursor") if k not in doc]
    if missing:
        raise fail(f"envelope is missing {', '.join(repr(k) for k in missing)}")
    if doc["object"] != "list":
        raise fail(f"'object' must be \"list\", got {json.dumps(doc['object'])[:60]}")
    data = doc["data"]
    if not isinstance(data, list):
        raise fail(f"'data' must be an array, got {_type_name(data)}")
    # An item that is not an object is the sync's to reject (a dead letter), not a reason to
    # fail the page: the records around it are good.
    has_more = doc["has_more"]
    if not isinstance(has_more, bool):
        raise fail(f"'has_more' must be a boolean, got {_type_name(has_more)}")
    next_cursor = doc["next_cursor"]
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise fail(f"'next_cursor' must be a string or null, got {_type_name(next_cursor)}")
    if has_more and not next_cursor:
        raise fail("'has_more' is true but 'next_cursor' is null or empty")
    return Page(
        records=data,
        has_more=has_more,
        next_cursor=next_cursor,
        api_version=_header(hdrs, ("x-api-version",)),
        server_date=parse_http_date(hdrs.get("date")),
        request_id=request_id,
        body=body,
    )
