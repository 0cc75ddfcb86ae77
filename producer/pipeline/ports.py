"""The orchestrator's ports: small Protocols that the adapters (and the tests' fakes) fill.

- `Source`: pages of raw records with their request metadata, for one query shape;
- `Sink` / `RunSink`: run-scoped writes: publish, dead_letter, drain, commit(checkpoint), abort;
- `CheckpointReader`: the committed checkpoint a run starts from;
- `RunObserver`, `Liveness`: observability.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from producer.pipeline.build import OutgoingEvent, Rejection
from producer.pipeline.dead_letters import DeadLetter, Origin, RawRecords
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress


@dataclass(frozen=True)
class SourcePage:
    """One page of a traversal as the source served it."""

    records: Sequence[object]
    raw_records: RawRecords
    """Each record's JSON exactly as sent (same positions as `records`)."""
    has_more: bool
    next_cursor: str | None
    api_version: str | None = None
    server_date: datetime | None = None
    """The response's `Date` header (aware UTC), if any."""
    request_id: str | None = None


class Source(Protocol):
    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        """Every page of one traversal (`filter[updated_at][gte]`, and `[lt]` for one window
        of a time-sliced backfill; ascending), in order.

        The consumer checks the cursors (`SyncRun` is the loop guard) and may stop early.
        """
        ...


@dataclass(frozen=True)
class Refusal:
    """An event Kafka refused for a reason that a dead letter can hold (too large): what its
    dead letter needs, not the event itself (a sink keeps this for every message in flight,
    and the event dicts of a full producer queue would be most of the process's memory)."""

    key: str
    updated_at: str
    origin: Origin
    rejection: Rejection

    @classmethod
    def of(cls, event: OutgoingEvent, rejection: Rejection) -> Refusal:
        return cls(event.key, event.updated_at, event.origin, rejection)


class TraversalInterruptedError(Exception):
    """The traversal was cut short by a stop: what was served so far is not the whole
    listing, and no caller may take it as complete (issue 17, failure 1)."""


class LaneError(RuntimeError):
    """Kafka did not take the lane's writes (delivery, transaction or checkpoint): a run that
    fails with it made no progress on the lane, whatever the API did (`SyncService._loop`
    counts these toward liveness)."""


class LaneFencedError(RuntimeError):
    """Another instance with the same identity took over this lane (exactly-once mode):
    this process must stop writing. One active producer per identity is a guarantee."""


class RunSink(Protocol):
    """Kafka writes of one run of one resource."""

    @property
    def acked(self) -> int:
        """Change events Kafka acknowledged so far in this run."""
        ...

    @property
    def dead_lettered(self) -> int:
        """Dead letters Kafka acknowledged so far in this run."""
        ...

    def publish(self, event: OutgoingEvent) -> Rejection | None:
        """Send one event; a `Rejection` (too large) means it was not sent."""
        ...

    def delete(self, event: OutgoingEvent) -> Rejection | None:
        """Send an `op = "d"` event, then a tombstone (null value) of the same key."""
        ...

    def dead_letter(self, letter: DeadLetter) -> None: ...

    def drain(self) -> list[Refusal]:
        """Wait until Kafka answered for every event; return those it refused as too large.

        Raises if any other event or dead letter was not acknowledged.
        """
        ...

    def mark_progress(self, progress: Progress) -> None:
        """After a full drain: record where a restarted run may resume (and, in exactly-once
        mode, commit the batch's transaction with it)."""
        ...

    def commit(
        self,
        checkpoint: Checkpoint | None,
        *,
        based_on: Checkpoint | None,
        complete_up_to: datetime | None = None,
    ) -> None:
        """After a full drain: write `checkpoint` (None: unchanged) unless the stored one is
        no longer `based_on` (the one the run started from: a reset happened meanwhile), in
        which case raise; clear the run's progress mark. `complete_up_to`: every change
        before it is in Kafka (heartbeat). Raises if not confirmed."""
        ...

    def abort(self) -> None:
        """The run ends without a checkpoint."""
        ...


class Sink(Protocol):
    def begin(self, resource: str, run_id: str) -> RunSink: ...


class CheckpointReader(Protocol):
    def current(self, resource: str) -> Checkpoint | None:
        """The committed checkpoint as stored now (a run reads it at its start)."""
        ...

    def progress(self, resource: str) -> Progress | None:
        """The progress mark of an interrupted run, as read by `current`."""
        ...


class RunObserver(Protocol):
    """What a run reports (implemented by `producer.observability.metrics.ProducerMetrics`)."""

    def run_started(self, resource: str, now: float | None = None) -> None: ...

    def run_finished(self, resource: str, outcome: str, duration_s: float) -> None: ...

    def add_pages(self, resource: str, n: int = 1) -> None: ...

    def add_fetched(self, resource: str, n: int = 1) -> None: ...

    def add_deduplicated(self, resource: str, n: int = 1) -> None: ...

    def add_stale(self, resource: str, n: int = 1) -> None: ...

    def add_dead_lettered(self, resource: str, reason: str, n: int = 1) -> None: ...

    def add_suppressed(self, resource: str, n: int = 1) -> None:
        """A polled version older than the record's delete was not published."""
        ...

    def checkpoint_committed(self, resource: str, watermark: datetime | None) -> None: ...

    def worker_error(self, resource: str) -> None:
        """An exception escaped a run of `resource` (its worker retries)."""
        ...

    def complete_up_to(self, resource: str, instant: datetime) -> None:
        """A run succeeded: every change before `instant` (API clock) is in Kafka."""
        ...

    def observe_server_date(
        self, resource: str, server_date: datetime, local_now: float | None = None
    ) -> None: ...


class Liveness(Protocol):
    def tick(self) -> None:
        """The main loop is alive."""
        ...

    def progress(self, worker: str) -> None:
        """Sync worker `worker` made progress (see producer/observability/health.py)."""
        ...

    def worker_done(self, worker: str) -> None: ...

    def failing(self, worker: str, error: str, in_a_row: int) -> None:
        """The worker hit an unexpected error and retries: /healthz shows it."""
        ...

    def recovered(self, worker: str) -> None:
        """The worker's run after `failing` got through."""
        ...
