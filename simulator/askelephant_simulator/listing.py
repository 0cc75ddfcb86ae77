"""Pure list-request handling: query validation, cursors, problem+json errors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from askelephant_simulator.clock import parse_ts
from askelephant_simulator.dataset import ID_PREFIX, Order, SortKey, crockford
from askelephant_simulator.engagement_query import (
    EngagementQuery,
    is_engagement_param,
    parse_engagement_query,
)
from askelephant_simulator.problems import ProblemError, bad_parameter

# docs/askelephant-api.md §2.1: limit defaults to 25, range 1-100
DEFAULT_LIMIT: Final = 25
MAX_LIMIT: Final = 100
# docs/askelephant-api.md §2.1: order_by "currently updated_at:asc or updated_at:desc", default desc
ORDER_BY_VALUES: Final = ("updated_at:asc", "updated_at:desc")
DEFAULT_ORDER: Final[Order] = "desc"
# docs/askelephant-api.md §2.1: filter[updated_at][gt|gte|lt|lte]
FILTER_OPS: Final = ("gt", "gte", "lt", "lte")


_FILTER_RE: Final = re.compile(r"^filter\[updated_at\]\[([a-z]+)\]$")
_INT_RE: Final = re.compile(r"^[+-]?\d+$")
# documented on some endpoints (docs/askelephant-api.md §2.2) but not implemented by the simulator
_UNSUPPORTED_PREFIXES: Final = ("filter[", "search", "expand")


def new_request_id() -> str:
    """docs/askelephant-api.md §3.1 / §2.4: request ids look like ``rid_01ABC...``."""
    return "rid_" + crockford(uuid.uuid4().int >> 2, 26)


@dataclass(frozen=True)
class QueryShape:
    """What a traversal is over: endpoint, order, updated_at filters (epoch µs) and, on
    engagements, the other filters and the expansions."""

    resource: str
    order: Order
    filters: tuple[tuple[str, int], ...]  # sorted by operator
    engagement: EngagementQuery = field(default_factory=EngagementQuery)

    @property
    def filter_map(self) -> dict[str, int]:
        return dict(self.filters)

    def fingerprint(self) -> str:
        canon = json.dumps(
            [self.resource, self.order, list(self.filters), self.engagement.to_json()],
            separators=(",", ":"),
        )
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ListRequest:
    shape: QueryShape
    limit: int
    after: SortKey | None


class CursorCodec:
    """Opaque cursors: base64url(JSON) without padding, authenticated with a server secret.

    docs/askelephant-api.md §2.3: cursors are opaque (the doc example is base64 JSON ``{"id":
    ...}``).
    Simulator choice: the cursor holds the query shape, its fingerprint and the keyset
    (updated_at µs, id) of the last record returned; a tampered or foreign cursor is a 400
    ``invalid_cursor``, one used with another endpoint or query shape a 400 ``cursor_mismatch``
    (seeds/bulk-exports: "Do not mix cursor values between different endpoints or different
    query shapes").  Cursors do not expire.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()[:16]

    def encode(self, shape: QueryShape, key: SortKey) -> str:
        body = {
            "v": 1,
            "r": shape.resource,
            "o": shape.order,
            "f": dict(shape.filters),
            "e": shape.engagement.to_json(),
            "q": shape.fingerprint(),
            "k": [key[0], key[1]],
        }
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        token = json.dumps(
            {"p": body, "s": self._mac(payload)}, separators=(",", ":"), sort_keys=True
        )
        return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")

    def decode(self, token: str) -> tuple[QueryShape, SortKey]:
        invalid = bad_parameter(
            "cursor",
            "invalid_cursor",
            "cursor is not a valid cursor of this API.",
            slug="invalid_cursor",
        )
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            outer = json.loads(raw)
            body = outer["p"]
            payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
            if not hmac.compare_digest(str(outer["s"]), self._mac(payload)):
                raise invalid
            resource, order, filters, key = body["r"], body["o"], body["f"], body["k"]
            if (
                body.get("v") != 1
                or resource not in ID_PREFIX
                or order not in ("asc", "desc")
                or not isinstance(filters, dict)
                or not all(op in FILTER_OPS and isinstance(v, int) for op, v in filters.items())
                or not (isinstance(key, list) and len(key) == 2)
                or not isinstance(key[0], int)
                or not isinstance(key[1], str)
            ):
                raise invalid
            engagement = EngagementQuery.from_json(body["e"])
        except ProblemError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise invalid from exc
        shape = QueryShape(resource, order, tuple(sorted(filters.items())), engagement)
        if shape.fingerprint() != body.get("q"):
            raise invalid
        return shape, (key[0], key[1])


def parse_list_query(
    resource: str, params: Sequence[tuple[str, str]], codec: CursorCodec
) -> ListRequest:
    """Validate the query string of ``GET /v2/<resource>`` (raises :class:`ProblemError`)."""
    seen: dict[str, str] = {}
    for name, value in params:
        if name in seen:
            # simulator choice: a repeated parameter is ambiguous -> 400
            raise bad_parameter(name, "duplicate_parameter", f"{name} must be given at most once.")
        seen[name] = value
        if resource == "engagements" and is_engagement_param(name):
            continue  # engagement_query.py validates these
        if _FILTER_RE.match(name) is None and name.startswith(_UNSUPPORTED_PREFIXES):
            # simulator choice: documented search/expand/other filters are not simulated
            raise bad_parameter(
                name, "unsupported_by_simulator", f"{name} is not supported by the API simulator."
            )

    # docs/askelephant-api.md §2.1 + §3.1 example: limit outside 1..100 -> 422 validation_failed /
    # invalid_range
    limit = DEFAULT_LIMIT
    if "limit" in seen:
        text = seen["limit"].strip()
        code = "invalid_range"
        if _INT_RE.match(text) is None:
            code = "invalid_type"  # simulator choice for a non-integer
        elif 1 <= int(text) <= MAX_LIMIT:
            limit = int(text)
            code = ""
        if code:
            raise ProblemError(
                422,
                "validation_failed",
                "The request contains invalid fields.",
                title="Validation Failed",
                errors=[
                    {
                        "field": "limit",
                        "code": code,
                        "message": f"limit must be between 1 and {MAX_LIMIT}.",
                    }
                ],
            )

    explicit = False
    order: Order = DEFAULT_ORDER
    if "order_by" in seen:
        explicit = True
        value = seen["order_by"]
        if value not in ORDER_BY_VALUES:
            # docs/askelephant-api.md §3.2: malformed query parameter -> 400 (simulator: code
            # invalid_enum)
            raise bad_parameter(
                "order_by", "invalid_enum", f"order_by must be one of {', '.join(ORDER_BY_VALUES)}."
            )
        order = "asc" if value == "updated_at:asc" else "desc"

    filters: dict[str, int] = {}
    for name, value in seen.items():
        m = _FILTER_RE.match(name)
        if m is None:
            continue
        explicit = True
        op = m.group(1)
        if op not in FILTER_OPS:
            raise bad_parameter(
                name, "invalid_operator", f"supported operators: {', '.join(FILTER_OPS)}."
            )
        try:
            # docs/askelephant-api.md §2.1: "ISO-8601 UTC date-time"; compared as instants at stored
            # precision
            filters[op] = parse_ts(value)
        except ValueError:
            hint = " (a '+' in a UTC offset must be percent-encoded as %2B)" if " " in value else ""
            raise bad_parameter(
                name, "invalid_datetime", f"{name} must be an ISO-8601 UTC date-time{hint}."
            ) from None

    engagement = EngagementQuery()
    if resource == "engagements":
        engagement = parse_engagement_query(seen)
        explicit = explicit or any(is_engagement_param(name) for name in seen)
    shape = QueryShape(resource, order, tuple(sorted(filters.items())), engagement)
    after: SortKey | None = None
    token = seen.get("cursor", "")
    if token:  # simulator choice: an empty `cursor=` means "first page"
        cursor_shape, after = codec.decode(token)
        if cursor_shape.resource != resource:
            raise bad_parameter(
                "cursor",
                "cursor_mismatch",
                f"cursor was issued for /v2/{cursor_shape.resource}, not /v2/{resource}.",
                slug="invalid_cursor",
            )
        if not explicit:
            # docs/askelephant-api.md §2.1 (/pagination example): the next-page request may drop
            # filter and
            # order_by; the simulator then continues the traversal the cursor belongs to.
            shape = cursor_shape
        elif cursor_shape.fingerprint() != shape.fingerprint():
            raise bad_parameter(
                "cursor",
                "cursor_mismatch",
                "cursor belongs to a different query shape (order_by / filter / expand values).",
                slug="invalid_cursor",
            )
    return ListRequest(shape, limit, after)


def envelope(data: list[dict[str, Any]], has_more: bool, next_cursor: str | None) -> dict[str, Any]:
    """docs/askelephant-api.md §2.3: {"object": "list", "data": [...], "has_more": bool,
    "next_cursor": str|null}."""
    return {"object": "list", "data": data, "has_more": has_more, "next_cursor": next_cursor}


def query_params(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def json_body(value: Mapping[str, Any] | list[Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
