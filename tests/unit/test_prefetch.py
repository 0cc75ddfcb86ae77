"""The prefetching source: same pages in order, bounded, errors handed on, no thread left."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from producer.pipeline.ports import SourcePage, TraversalInterruptedError
from producer.pipeline.prefetch import PrefetchingSource
from tests.support.fakes import page

pytestmark = pytest.mark.unit

JOIN_S = 10.0
"""Generous bound for a thread to notice it should end (never reached when it works)."""


@dataclass
class CountingSource:
    """Serves `total` pages (None: endless), then raises `error` if given; counts what it
    yielded and whether its generator was closed."""

    total: int | None = 5
    error: Exception | None = None
    served: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    filters: list[str | None] = field(default_factory=list)

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        self.filters.append(filter_gte)
        try:
            for n in itertools.count() if self.total is None else range(self.total):
                last = self.total is not None and n == self.total - 1 and self.error is None
                self.served += 1
                yield page([{"n": n}], has_more=not last, next_cursor=f"c{n}")
            if self.error is not None:
                raise self.error
        finally:
            self.closed.set()


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def _wait_gone(name: str) -> None:
    for thread in _threads(name):
        thread.join(JOIN_S)
    assert _threads(name) == []


def test_same_pages_in_the_same_order() -> None:
    source = CountingSource(total=7)
    pages = list(PrefetchingSource(source, depth=2, name="pf-order").pages("2026-01-01"))
    assert [p.records[0] for p in pages] == [{"n": n} for n in range(7)]  # type: ignore[index]
    assert source.filters == ["2026-01-01"]
    _wait_gone("pf-order")
    assert source.closed.is_set()


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_never_more_than_depth_pages_ahead(depth: int) -> None:
    source = CountingSource(total=30)
    for consumed, _ in enumerate(PrefetchingSource(source, depth=depth).pages(None), start=1):
        # `depth` queued, plus the one the fetcher holds while it waits for a free slot
        assert source.served <= consumed + depth + 1
    assert source.served == 30


def test_an_error_comes_after_the_pages_before_it() -> None:
    source = CountingSource(total=3, error=RuntimeError("API down"))
    pages = PrefetchingSource(source, name="pf-error").pages(None)
    got = [next(pages).records[0] for _ in range(3)]
    with pytest.raises(RuntimeError, match="API down"):
        next(pages)
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
    _wait_gone("pf-error")


def test_stopping_early_ends_the_fetcher_and_closes_the_source() -> None:
    source = CountingSource(total=None)
    pages = PrefetchingSource(source, depth=2, name="pf-break").pages(None)
    for p in pages:
        if p.records[0] == {"n": 3}:
            break
    pages.close()  # what the `for` loop of the service does when its generator is dropped
    _wait_gone("pf-break")
    assert source.closed.is_set()


def test_the_stop_event_ends_the_traversal() -> None:
    stop = threading.Event()
    source = CountingSource(total=None)
    got = 0

    def consume() -> None:
        nonlocal got
        for _ in PrefetchingSource(source, stop=stop, name="pf-stop").pages(None):
            got += 1
            if got == 2:
                stop.set()

    with pytest.raises(TraversalInterruptedError):  # never a quiet end: it is not complete
        consume()
    assert got >= 2  # pages already queued may still come, then the iteration is cut
    _wait_gone("pf-stop")
    assert source.closed.is_set()


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        PrefetchingSource(CountingSource(), depth=0)
