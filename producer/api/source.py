"""The `Source` port on the API client: one cursor traversal of one resource."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from producer.api.client import ApiClient
from producer.api.page import Page
from producer.api.query import ListQuery
from producer.api.raw_json import RawJsonError, array_item_texts
from producer.pipeline.ports import SourcePage


@dataclass(frozen=True)
class LazyRaw:
    """Each record's text, cut from the response body only when someone asks (dead letters)."""

    page: Page
    _texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.page.records)

    def __getitem__(self, position: int) -> bytes:
        body = self.page.body
        if body is not None and not self._texts:
            # a body the walker cannot follow falls back to re-serialising below
            with contextlib.suppress(RawJsonError, ValueError):
                self._texts.extend(array_item_texts(body))
        if len(self._texts) == len(self.page.records):
            return self._texts[position].encode()
        record = self.page.records[position]
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


class ApiSource:
    def __init__(self, client: ApiClient, resource: str, page_size: int) -> None:
        self.client = client
        self.resource = resource
        self.page_size = page_size

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        query = ListQuery(
            self.resource, updated_at_gte=filter_gte, updated_at_lt=filter_lt, limit=self.page_size
        )
        cursor: str | None = None
        while True:
            page = self.client.fetch_page(query if cursor is None else query.next_page(cursor))
            yield SourcePage(
                records=page.records,
                raw_records=LazyRaw(page),
                has_more=page.has_more,
                next_cursor=page.next_cursor,
                api_version=page.api_version,
                server_date=page.server_date,
                request_id=page.request_id,
            )
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor
