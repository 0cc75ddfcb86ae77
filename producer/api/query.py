"""Request building (pure): one list request of the AskElephant API v2 as path + query params.

Only ``GET /v2/<resource>`` list calls exist here; that is all a change-stream producer needs
(docs/askelephant-api.md §2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

__all__ = ["MAX_PAGE_SIZE", "ORDER_BY_VALUES", "ListQuery"]

MAX_PAGE_SIZE: Final = 100
ORDER_BY_VALUES: Final = ("updated_at:asc", "updated_at:desc")

_RESOURCE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ListQuery:
    """One list request. Every page of a traversal repeats the same filter and order_by and
    adds the cursor: the docs' page-2 example drops them, but whether the cursor encodes
    them is undocumented, so re-sending is the safe choice (docs/askelephant-api.md §2.1
    [INFERRED]; the bulk-export guide: "keep the same order_by and filter values for every
    page")."""

    resource: str
    updated_at_gte: str | None = None
    updated_at_lt: str | None = None
    """Upper bound (exclusive) of one window of a time-sliced backfill."""
    order_by: str = "updated_at:asc"
    limit: int = MAX_PAGE_SIZE
    cursor: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.resource, str) or not _RESOURCE_RE.match(self.resource):
            raise ValueError(f"invalid resource name {self.resource!r}")
        if self.order_by not in ORDER_BY_VALUES:
            raise ValueError(f"order_by must be one of {ORDER_BY_VALUES}, got {self.order_by!r}")
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 1 <= self.limit <= MAX_PAGE_SIZE
        ):
            raise ValueError(f"limit must be an integer in 1..{MAX_PAGE_SIZE}, got {self.limit!r}")
        if self.cursor is not None and (not isinstance(self.cursor, str) or not self.cursor):
            raise ValueError("cursor must be a non-empty string or None")
        for bound in (self.updated_at_gte, self.updated_at_lt):
            if bound is not None:
                _check_timestamp(bound)

    @property
    def path(self) -> str:
        return f"/v2/{self.resource}"

    def params(self) -> list[tuple[str, str]]:
        """Query params in a stable order: filter, order_by, limit, cursor."""
        out: list[tuple[str, str]] = []
        if self.updated_at_gte is not None:
            out.append(("filter[updated_at][gte]", self.updated_at_gte))
        if self.updated_at_lt is not None:
            out.append(("filter[updated_at][lt]", self.updated_at_lt))
        out.append(("order_by", self.order_by))
        out.append(("limit", str(self.limit)))
        if self.cursor is not None:
            out.append(("cursor", self.cursor))
        return out

    def next_page(self, cursor: str) -> ListQuery:
        """The same query continued at `cursor` (a page's `next_cursor`)."""
        return replace(self, cursor=cursor)


def _check_timestamp(value: str) -> None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"updated_at_gte must be an ISO-8601 timestamp with a UTC offset, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"updated_at_gte must carry a UTC offset (e.g. 'Z'), got {value!r}")
