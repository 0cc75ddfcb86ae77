"""A pure in-memory model of one AskElephant list endpoint, for property tests.

Keyset pagination on (updated_at, id) ascending with an inclusive `gte` filter, like the
simulator. Records change between pages on request, so a record can move from an unread
page to the end of the traversal.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producer.sync.run import SyncRun, Version
from producer.sync.timestamps import Micros, from_micros

BASE_MICROS = 1_772_000_000_000_000  # 2026-02-25


def render(micros: Micros, style: int) -> str:
    moment = from_micros(micros)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if style == 0:
        return f"{base}.{moment.microsecond:06d}Z"
    if style == 1:
        return f"{base}.{moment.microsecond:06d}+00:00"
    if style == 2 and moment.microsecond % 1000 == 0:
        return f"{base}.{moment.microsecond // 1000:03d}Z"
    if style == 3 and moment.microsecond == 0:
        return f"{base}Z"
    return f"{base}.{moment.microsecond:06d}000Z"  # nanosecond rendering


@dataclass
class FakeSource:
    rng: random.Random
    clock: Micros = BASE_MICROS
    records: dict[str, tuple[Micros, int]] = field(default_factory=dict)
    """id -> (updated_at, revision)."""

    def create(self, count: int, *, tie: bool = False) -> None:
        for _ in range(count):
            self._tick(tie)
            self.records[f"cnt_{len(self.records):05d}"] = (self.clock, 0)

    def mutate(self, index: int, *, tie: bool) -> None:
        if not self.records:
            return
        record_id = sorted(self.records)[index % len(self.records)]
        # An update always moves updated_at: a tie is with *other* records, never with itself
        # (two versions at one (id, updated_at) are indistinguishable by contract).
        self._tick(tie and self.records[record_id][0] != self.clock)
        self.records[record_id] = (self.clock, self.records[record_id][1] + 1)

    def _tick(self, tie: bool) -> None:
        if not tie:
            self.clock += self.rng.choice([1, 1000, 1_000_000, 1_500_000])

    def current(self) -> dict[str, tuple[Micros, int]]:
        return dict(self.records)

    def page(
        self, gte: Micros | None, cursor: str | None, limit: int, lt: Micros | None = None
    ) -> tuple[list[dict[str, Any]], bool, str | None, Micros]:
        rows = sorted((t, i) for i, (t, _) in self.records.items())
        if gte is not None:
            rows = [r for r in rows if r[0] >= gte]
        if lt is not None:
            rows = [r for r in rows if r[0] < lt]
        if cursor is not None:
            t, i = cursor.split("|")
            rows = [r for r in rows if r > (int(t), i)]
        chunk, more = rows[:limit], len(rows) > limit
        data = [
            {
                "id": i,
                "updated_at": render(t, self.rng.randrange(5)),
                "created_at": render(BASE_MICROS, 0),
                "revision": self.records[i][1],
            }
            for t, i in chunk
        ]
        next_cursor = f"{chunk[-1][0]}|{chunk[-1][1]}" if more else None
        return data, more, next_cursor, self.clock


def drive(
    run: SyncRun,
    source: FakeSource,
    limit: int,
    between_pages: Callable[[int], None] = lambda _: None,
    stop_after_pages: int | None = None,
    with_date: bool = True,
) -> list[Version]:
    """Walk a run to its end (or stop early, like a killed process); return what it published.

    `with_date=False`: the pages carry no `Date` header (the run falls back to its own clock).
    """
    published: list[Version] = []
    while not run.done:
        if stop_after_pages is not None and run.stats.pages >= stop_after_pages:
            break
        published.extend(take_page(run, source, limit, with_date))
        between_pages(run.stats.pages)
    return published


def take_page(
    run: SyncRun, source: FakeSource, limit: int, with_date: bool = True
) -> list[Version]:
    """One page of `run`'s traversal (its filter and window); what it publishes."""
    gte = None if run.filter_gte is None else _parse(run.filter_gte)
    lt = None if run.filter_lt is None else _parse(run.filter_lt)
    data, more, cursor, served_at = source.page(gte, run.cursor, limit, lt)
    result = run.accept_page(
        data, has_more=more, next_cursor=cursor, served_at=served_at if with_date else None
    )
    assert not result.rejected
    return result.accepted


def _parse(text: str) -> Micros:
    from producer.sync.timestamps import instant_micros

    return instant_micros(text)
