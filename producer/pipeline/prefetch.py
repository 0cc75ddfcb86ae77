"""A `Source` that fetches up to N pages ahead on a background thread.

Without it one thread fetches a page, then builds and produces it, then fetches the next: with
100 ms per API page the network wait and the CPU work add up. Here the next request is in
flight while the current page is built and produced. The queue is bounded, so a slow consumer
(the Kafka producer's queue full, back-pressure in `KafkaSink.produce`) stops the fetching
too: never more than `depth` pages are held in memory beyond the one being consumed.

The fetching thread ends when the traversal ends, when it raised (the exception is handed to
the consumer, in order, after the pages before it), when the consumer stops iterating (closing
the generator, e.g. `break` once `SyncRun` is done), or when `stop` is set. A stop never ends
the iteration quietly: it raises `TraversalInterruptedError`, so no caller mistakes the pages
so far for the whole listing (a reconciliation would delete everything it did not see).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from producer.pipeline.ports import Source, SourcePage, TraversalInterruptedError

__all__ = ["DEFAULT_DEPTH", "PrefetchingSource"]

DEFAULT_DEPTH: Final = 2
"""Pages fetched ahead: one in flight while one waits; more buys nothing when the API's
latency is steady, and each costs a page of memory."""
_POLL_S: Final = 0.1
"""How often a blocked side looks at the stop flags (a put or get never blocks longer)."""


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


class PrefetchingSource:
    """Wraps a `Source`; same pages, same order, fetched ahead."""

    def __init__(
        self,
        source: Source,
        depth: int = DEFAULT_DEPTH,
        stop: threading.Event | None = None,
        name: str = "prefetch",
    ) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.source = source
        self.depth = depth
        self.stop = stop or threading.Event()
        self.name = name

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        slots: queue.Queue[SourcePage | _End] = queue.Queue(maxsize=self.depth)
        abandoned = threading.Event()

        def give_up() -> bool:
            return abandoned.is_set() or self.stop.is_set()

        def put(item: SourcePage | _End) -> bool:
            while not give_up():
                try:
                    slots.put(item, timeout=_POLL_S)
                except queue.Full:
                    continue
                return True
            return False

        def fetch() -> None:
            pages = self.source.pages(filter_gte, filter_lt)
            try:
                for page in pages:
                    if not put(page):
                        return
                put(_End())
            except BaseException as exc:  # handed to the consumer, who re-raises it
                put(_End(exc))
            finally:
                close = getattr(pages, "close", None)
                if close is not None:
                    close()

        worker = threading.Thread(target=fetch, name=self.name, daemon=True)
        worker.start()
        try:
            while True:
                try:
                    item = slots.get(timeout=_POLL_S)
                except queue.Empty:
                    if self.stop.is_set():
                        raise TraversalInterruptedError(
                            f"{self.name}: stopped before the traversal finished"
                        ) from None
                    if not worker.is_alive() and slots.empty():
                        # cannot happen: `fetch` always ends with _End unless stopped
                        raise TraversalInterruptedError(
                            f"{self.name}: the fetching thread ended without an answer"
                        ) from None
                    continue
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            abandoned.set()
            # the fetcher sees `abandoned` within one poll, or once its request returns
            worker.join(timeout=_POLL_S * 2)
