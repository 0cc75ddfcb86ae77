"""PURE: a run as a stream of items (docs/architecture.md).

The driver turns what the API served into what must happen in Kafka, as data:

    Publish | Reject | Mark | Commit

in the manner of Estuary's capture helpers (documents, then checkpoints, in one stream) over
Airbyte-style windows: a plain incremental run is one open window `[checkpoint, ∞)`, a sliced
export K windows, a resumed run the windows of its mark (producer/sync/slices.py). It decides
nothing about Kafka and performs no I/O: `producer.pipeline.writer.RunWriter` applies the items
to a run sink, with the same guarantees for every path that writes.

One batch policy (`BatchPolicy`) decides when a mark is due, for a single traversal and for
the windows of a sliced export alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from producer.pipeline.build import Rejection, RunContext
from producer.pipeline.dead_letters import Origin
from producer.pipeline.ports import SourcePage
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress
from producer.sync.run import PageResult, SyncRun, Version
from producer.sync.slices import window_progress
from producer.sync.timestamps import to_micros


@dataclass(frozen=True, slots=True)
class Publish:
    """A version to publish (unless the record was deleted since: the writer checks)."""

    version: Version
    origin: Origin
    context: RunContext


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that cannot become an event: a dead letter, or a failed run."""

    rejection: Rejection
    origin: Origin
    record_id: str | None
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class Mark:
    """A progress mark is due: every event so far acknowledged, then where a restarted run
    may resume. `progress` builds it from what Kafka acknowledged and the time it is written
    (None: no progress past the starting point yet)."""

    progress: Callable[[int, str], Progress | None]


@dataclass(frozen=True, slots=True)
class Commit:
    """The traversal finished: every event acknowledged, then the new checkpoint (None:
    unchanged), compared and set against `based_on`."""

    run: SyncRun
    based_on: Checkpoint | None


Item = Publish | Reject | Mark | Commit


class BatchPolicy:
    """A mark after `pages` pages or `seconds` seconds, whichever comes first
    (BATCH_PAGES, BATCH_SECONDS; a transaction per batch in exactly-once mode)."""

    def __init__(
        self, pages: int, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.pages = pages
        self.seconds = seconds
        self._clock = clock
        self._started = clock()
        self._taken = 0

    def page_taken(self) -> bool:
        """Count a page; True when a mark is due (and a new batch starts)."""
        self._taken += 1
        if self._taken >= self.pages or self._clock() - self._started >= self.seconds:
            self._started, self._taken = self._clock(), 0
            return True
        return False


def page_items(
    run: SyncRun, page: SourcePage, run_id: str, now_ms: int
) -> Iterator[Publish | Reject]:
    """The items of one page of `run` (its dedup and checkpoint state advance)."""
    result: PageResult = run.accept_page(
        page.records,
        has_more=page.has_more,
        next_cursor=page.next_cursor,
        served_at=to_micros(page.server_date) if page.server_date else None,
    )
    for rejected in result.rejected:
        origin = Origin(page.request_id, rejected.page, rejected.position, page.raw_records)
        rejection = Rejection(rejected.reason, rejected.message)
        yield Reject(rejection, origin, record_id_of(rejected.record), None)
    context = RunContext(run_id, run.snapshot, page.api_version, now_ms)
    for version in result.accepted:
        origin = Origin(page.request_id, version.page, version.position, page.raw_records)
        yield Publish(version, origin, context)


def run_mark(run: SyncRun, run_id: str, committed: Checkpoint | None) -> Mark:
    """The mark of one traversal: its resume point, with the committed checkpoint it is
    based on (a mark of another starting point is stale after a reset)."""

    def progress(published: int, now: str) -> Progress | None:
        mark = run.progress_mark(run_id=run_id, completed_at=now, published=published)
        if mark is None:
            return None  # nothing past the starting point yet
        return Progress(
            resource=run.resource,
            mark=mark,
            snapshot=run.snapshot,
            based_on=committed.run_id if committed is not None else None,
            run_id=run_id,
            pages=run.stats.pages,
            written_at=now,
        )

    return Mark(progress)


def windows_mark(windows: Sequence[SyncRun], run_id: str) -> Mark:
    """The mark of a sliced export: every window's resume point (taken between two pages,
    so every window is at a page boundary)."""

    def progress(_published: int, now: str) -> Progress:
        return Progress(
            resource=windows[0].resource,
            mark=None,
            snapshot=True,
            based_on=None,  # a first export: no committed checkpoint to start from
            run_id=run_id,
            pages=sum(w.stats.pages for w in windows),
            written_at=now,
            windows=window_progress(windows, run_id=run_id, written_at=now),
        )

    return Mark(progress)


def record_id_of(record: object) -> str | None:
    """The id of a record that could not be placed, when it has a usable one (the DLQ key)."""
    if isinstance(record, dict):
        record_id = record.get("id")
        if isinstance(record_id, str) and record_id:
            try:
                record_id.encode()
            except UnicodeEncodeError:
                return None
            return record_id
    return None
