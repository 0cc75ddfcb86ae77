"""In-memory fakes of every port of the orchestrator (producer/pipeline/ports.py)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from producer.pipeline.build import OutgoingEvent, Rejection
from producer.pipeline.dead_letters import TOO_LARGE, DeadLetter
from producer.pipeline.ports import Refusal, SourcePage
from producer.sync import chunks
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress


def page(
    records: Sequence[object],
    *,
    has_more: bool = False,
    next_cursor: str | None = None,
    server_date: datetime | None = None,
    request_id: str | None = "req-1",
) -> SourcePage:
    raw = [json.dumps(r).encode() for r in records]
    return SourcePage(
        records=list(records),
        raw_records=raw,
        has_more=has_more,
        next_cursor=next_cursor,
        api_version="2026-01-01",
        server_date=server_date,
        request_id=request_id,
    )


@dataclass
class ListSource:
    """Serves the given pages in order, whatever the filter; remembers the filters asked."""

    pages_to_serve: list[SourcePage]
    filters: list[str | None] = field(default_factory=list)

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        self.filters.append(filter_gte)
        yield from self.pages_to_serve


@dataclass
class FakeRunSink:
    resource: str
    run_id: str
    owner: FakeSink
    events: list[OutgoingEvent] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    committed: list[Checkpoint | None] = field(default_factory=list)
    marked: list[Progress] = field(default_factory=list)
    aborted: bool = False

    @property
    def acked(self) -> int:
        return len(self.events)

    @property
    def dead_lettered(self) -> int:
        return len(self.letters)

    def publish(self, event: OutgoingEvent) -> Rejection | None:
        if event.key in self.owner.too_large:
            return Rejection(TOO_LARGE, "too large", {"size": "999", "limit": "100"})
        if event.key in self.owner.refused_by_broker:
            self.owner.pending_refusals.append(
                Refusal.of(event, Rejection(TOO_LARGE, "refused", {"size": "9", "limit": "1"}))
            )
            return None
        self.events.append(event)
        self.owner.published.append(event)
        return None

    def delete(self, event: OutgoingEvent) -> Rejection | None:
        rejection = self.publish(event)
        if rejection is None:
            self.owner.tombstones.append(event.key)
        return rejection

    def dead_letter(self, letter: DeadLetter) -> None:
        if self.owner.dead_letters_fail:
            self.owner.dead_letter_attempts += 1
            return  # "sent"; the broker's refusal surfaces at drain
        self.letters.append(letter)
        self.owner.dead_letters.append(letter)

    def drain(self) -> list[Refusal]:
        if self.owner.dead_letter_attempts:
            raise RuntimeError("1 message(s) not acknowledged: dead letter refused")
        refused, self.owner.pending_refusals = self.owner.pending_refusals, []
        return refused

    def commit(
        self,
        checkpoint: Checkpoint | None,
        *,
        based_on: Checkpoint | None,
        complete_up_to: datetime | None = None,
    ) -> None:
        if self.drain():
            raise RuntimeError("refusals left")
        if checkpoint is not None:
            if self.owner.checkpoints.get(checkpoint.resource) != based_on:
                raise RuntimeError("the checkpoint changed while the run was going")
            self.owner.checkpoints[checkpoint.resource] = self.owner.stored(checkpoint)
        self.owner.marks.pop(self.resource, None)
        self.committed.append(checkpoint)

    def mark_progress(self, progress: Progress) -> None:
        if self.drain():
            raise RuntimeError("refusals left")
        self.owner.marks[self.resource] = self.owner.stored_progress(progress)
        self.marked.append(progress)

    def abort(self) -> None:
        self.aborted = True


@dataclass
class FakeSink:
    """Kafka as lists; `checkpoints` doubles as the CheckpointReader."""

    too_large: set[str] = field(default_factory=set)
    refused_by_broker: set[str] = field(default_factory=set)
    dead_letters_fail: bool = False
    published: list[OutgoingEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    runs: list[FakeRunSink] = field(default_factory=list)
    pending_refusals: list[Refusal] = field(default_factory=list)
    marks: dict[str, Progress] = field(default_factory=dict)
    """Progress marks as stored (what `progress` reads)."""
    dead_letter_attempts: int = 0
    tombstones: list[str] = field(default_factory=list)
    chunk_bytes: int | None = None
    """Set: checkpoints and marks are stored as the checkpoint store writes them (chunk
    records of at most this many bytes, producer/sync/chunks.py) and read back from them."""
    largest_record: int = 0
    chunk_records: int = 0

    def stored(self, checkpoint: Checkpoint) -> Checkpoint:
        if self.chunk_bytes is None:
            return checkpoint
        checkpoint = replace(checkpoint, token=uuid.uuid4().hex)
        main, parts, _ = chunks.encode_checkpoint(checkpoint, self.chunk_bytes)
        self._count(main, parts)
        head, ref = chunks.decode_checkpoint_head(main)
        return (
            head if ref is None else chunks.assemble_checkpoint(head, ref, dict(enumerate(parts)))
        )

    def stored_progress(self, progress: Progress) -> Progress:
        if self.chunk_bytes is None:
            return progress
        main, parts, ref = chunks.encode_progress(progress, uuid.uuid4().hex, self.chunk_bytes)
        self._count(main, parts)
        if ref is None:
            return Progress.from_json(main)
        return chunks.assemble_progress(progress.resource, ref, dict(enumerate(parts)))

    def _count(self, main: bytes, parts: list[bytes]) -> None:
        self.largest_record = max(self.largest_record, len(main), *map(len, parts))
        self.chunk_records += len(parts)

    def begin(self, resource: str, run_id: str) -> FakeRunSink:
        run = FakeRunSink(resource, run_id, self)
        self.runs.append(run)
        return run

    def current(self, resource: str) -> Checkpoint | None:
        return self.checkpoints.get(resource)

    def progress(self, resource: str) -> Progress | None:
        return self.marks.get(resource)


@dataclass
class FakeObserver:
    counts: Counter[str] = field(default_factory=Counter)
    outcomes: list[str] = field(default_factory=list)
    complete: dict[str, datetime] = field(default_factory=dict)

    def run_started(self, resource: str, now: float | None = None) -> None:
        self.counts["runs_started"] += 1

    def run_finished(self, resource: str, outcome: str, duration_s: float) -> None:
        self.outcomes.append(outcome)

    def add_pages(self, resource: str, n: int = 1) -> None:
        self.counts["pages"] += n

    def add_fetched(self, resource: str, n: int = 1) -> None:
        self.counts["fetched"] += n

    def add_deduplicated(self, resource: str, n: int = 1) -> None:
        self.counts["deduplicated"] += n

    def add_stale(self, resource: str, n: int = 1) -> None:
        self.counts["stale"] += n

    def add_suppressed(self, resource: str, n: int = 1) -> None:
        self.counts["suppressed"] += n

    def add_dead_lettered(self, resource: str, reason: str, n: int = 1) -> None:
        self.counts[f"dead_lettered:{reason}"] += n

    def checkpoint_committed(self, resource: str, watermark: datetime | None) -> None:
        self.counts["checkpoints"] += 1

    def complete_up_to(self, resource: str, instant: datetime) -> None:
        self.complete[resource] = instant

    def worker_error(self, resource: str) -> None:
        self.counts["worker_errors"] += 1

    def observe_server_date(
        self, resource: str, server_date: datetime, local_now: float | None = None
    ) -> None:
        self.counts["server_dates"] += 1


@dataclass
class FakeLiveness:
    ticks: int = 0
    progress_by_worker: Counter[str] = field(default_factory=Counter)
    done: list[str] = field(default_factory=list)
    errors: dict[str, tuple[str, int]] = field(default_factory=dict)

    def tick(self) -> None:
        self.ticks += 1

    def progress(self, worker: str) -> None:
        self.progress_by_worker[worker] += 1

    def worker_done(self, worker: str) -> None:
        self.done.append(worker)

    def failing(self, worker: str, error: str, in_a_row: int) -> None:
        self.errors[worker] = (error, in_a_row)

    def recovered(self, worker: str) -> None:
        self.errors.pop(worker, None)
