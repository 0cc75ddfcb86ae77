"""Properties of the production run loop: `SyncService` with its driver and writer
(producer/pipeline/driver.py, writer.py), not a copy of them, in the exactly-once model.

A random API (tests/support/fake_source.py) changes between pages; runs are killed after
random pages; single traversals and sliced exports (`BACKFILL_SLICES`) alike. The sink models
Kafka transactions: events become visible with the progress mark or the checkpoint that
commits them, and a killed run's open transaction is aborted. After quiet final runs, no
version is visible twice and Kafka's latest version of every record is the API's.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from producer.pipeline.build import OutgoingEvent, Rejection
from producer.pipeline.dead_letters import DeadLetter
from producer.pipeline.ports import Refusal, SourcePage
from producer.service import SyncService
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress
from producer.sync.timestamps import Micros, from_micros, instant_micros
from tests.support.fake_source import FakeSource
from tests.support.fakes import FakeLiveness, FakeObserver


class KilledError(Exception):
    """The process died here: nothing after it runs, the open transaction is aborted."""


@dataclass
class ApiOfFakeSource:
    """The `Source` port over a `FakeSource`: pages with a `Date` header, changes applied
    after given page counts, and a kill after a given number of pages."""

    source: FakeSource
    limit: int
    changes: dict[int, list[tuple[int, bool, bool]]] = field(default_factory=dict)
    kill_after: int | None = None
    pages_served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        gte = None if filter_gte is None else instant_micros(filter_gte)
        lt = None if filter_lt is None else instant_micros(filter_lt)
        cursor: str | None = None
        while True:
            with self.lock:
                if self.kill_after is not None and self.pages_served >= self.kill_after:
                    raise KilledError
                data, more, cursor, served_at = self.source.page(gte, cursor, self.limit, lt)
                self.pages_served += 1
                for index, tie, create in self.changes.pop(self.pages_served, []):
                    if create:
                        self.source.create(1, tie=tie)
                    else:
                        self.source.mutate(index, tie=tie)
            yield SourcePage(
                records=list(data),
                raw_records=[json.dumps(r).encode() for r in data],
                has_more=more,
                next_cursor=cursor,
                api_version=None,
                server_date=from_micros(served_at),
                request_id=None,
            )
            if not more:
                return


@dataclass
class Transactions:
    """Kafka in exactly-once mode, as consumers with read_committed see it."""

    visible: list[OutgoingEvent] = field(default_factory=list)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    marks: dict[str, Progress] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, resource: str, run_id: str) -> TransactionalRun:
        return TransactionalRun(self, resource)

    def current(self, resource: str) -> Checkpoint | None:
        return self.checkpoints.get(resource)

    def progress(self, resource: str) -> Progress | None:
        return self.marks.get(resource)


@dataclass
class TransactionalRun:
    world: Transactions
    resource: str
    pending: list[OutgoingEvent] = field(default_factory=list)
    sent: int = 0

    @property
    def acked(self) -> int:
        return self.sent

    @property
    def dead_lettered(self) -> int:
        return 0

    def publish(self, event: OutgoingEvent) -> Rejection | None:
        with self.world.lock:
            self.pending.append(event)
            self.sent += 1
        return None

    def delete(self, event: OutgoingEvent) -> Rejection | None:
        return self.publish(event)

    def dead_letter(self, letter: DeadLetter) -> None:
        raise AssertionError(f"unexpected dead letter: {letter.reason}")

    def drain(self) -> list[Refusal]:
        return []

    def mark_progress(self, progress: Progress) -> None:
        with self.world.lock:  # the batch's events and its mark: one transaction
            self.world.visible.extend(self.pending)
            self.pending.clear()
            self.world.marks[self.resource] = progress

    def commit(
        self,
        checkpoint: Checkpoint | None,
        *,
        based_on: Checkpoint | None,
        complete_up_to: datetime | None = None,
    ) -> None:
        with self.world.lock:
            if checkpoint is not None:
                assert self.world.checkpoints.get(self.resource) == based_on
                self.world.checkpoints[self.resource] = checkpoint
            self.world.visible.extend(self.pending)
            self.pending.clear()
            self.world.marks.pop(self.resource, None)

    def abort(self) -> None:
        self.pending.clear()


change = st.tuples(st.integers(0, 50), st.booleans(), st.booleans())


@settings(max_examples=400, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    initial=st.integers(0, 30),
    initial_ties=st.booleans(),
    limit=st.integers(1, 6),
    batch_pages=st.integers(1, 3),
    slices=st.integers(1, 3),
    attempts=st.lists(
        st.tuples(
            st.dictionaries(st.integers(1, 40), st.lists(change, max_size=3), max_size=4),
            st.one_of(st.none(), st.integers(0, 10)),  # killed after this many pages
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_the_service_publishes_every_version_once_through_kills_and_changes(
    seed: int,
    initial: int,
    initial_ties: bool,
    limit: int,
    batch_pages: int,
    slices: int,
    attempts: list[tuple[dict[int, list[tuple[int, bool, bool]]], int | None]],
) -> None:
    source = FakeSource(random.Random(seed))
    source.create(initial, tie=initial_ties)
    api = ApiOfFakeSource(source, limit)
    kafka = Transactions()
    service = SyncService(
        resources=["contacts"],
        topic_for=lambda r: f"t.{r}",
        source_for=lambda _r: api,
        sink=kafka,
        checkpoints=kafka,
        observer=FakeObserver(),
        liveness=FakeLiveness(),
        producer_id="p",
        batch_pages=batch_pages,
        batch_seconds=3600.0,
        backfill_slices=slices,
        clock=lambda: source.clock / 1_000_000,
    )
    for changes, kill_after in attempts:
        api.changes = {api.pages_served + k: list(v) for k, v in changes.items()}
        api.kill_after = None if kill_after is None else api.pages_served + kill_after
        report = service.sync_once("contacts")
        assert report.outcome == "success" or "KilledError" in (report.error or ""), report.error
    api.changes, api.kill_after = {}, None
    for _ in range(3):  # quiet runs: the last changes are caught up
        source.clock += 2_000_000  # past the settle window
        assert service.sync_once("contacts").outcome == "success"
    versions = [(e.key, int(e.value["updated_at_us"])) for e in kafka.visible]
    assert len(versions) == len(set(versions)), "a version reached Kafka twice"
    latest: dict[str, Micros] = {}
    for record_id, instant in versions:
        latest[record_id] = max(instant, latest.get(record_id, instant))
    assert latest == {i: t for i, (t, _) in source.current().items()}
