"""The orchestrator against fakes of every port: per-record outcomes, dead letters, commits."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from producer.pipeline.dead_letters import TOO_LARGE
from producer.pipeline.ports import SourcePage
from producer.service import SyncService
from producer.sync.checkpoint import Checkpoint
from producer.sync.run import INVALID_UPDATED_AT, MISSING_ID, MISSING_UPDATED_AT, NOT_AN_OBJECT
from producer.sync.slices import WINDOWS_PER_SLICE
from producer.sync.timestamps import instant_micros
from tests.support.fakes import FakeLiveness, FakeObserver, FakeSink, ListSource, page

NOW = 1_900_000_000.0  # 2030: after every record below


def rec(i: int, ts: str = "2026-03-01T00:00:00Z") -> dict[str, Any]:
    return {"id": f"c{i:03d}", "updated_at": ts, "created_at": "2026-01-01T00:00:00Z"}


def good(first: int, count: int, second: int = 0) -> list[dict[str, Any]]:
    return [
        rec(i, f"2026-03-01T00:{second:02d}:{i % 60:02d}Z") for i in range(first, first + count)
    ]


def service(
    source: ListSource,
    sink: FakeSink,
    *,
    policy: str = "dead-letter",
    stop: threading.Event | None = None,
) -> tuple[SyncService, FakeObserver, FakeLiveness]:
    observer, liveness = FakeObserver(), FakeLiveness()
    svc = SyncService(
        resources=["contacts"],
        topic_for=lambda r: f"t.{r}",
        source_for=lambda _r: source,
        sink=sink,
        checkpoints=sink,
        observer=observer,
        liveness=liveness,
        producer_id="p1",
        dead_letter_policy=policy,  # type: ignore[arg-type]
        stop=stop,
        clock=lambda: NOW,
    )
    return svc, observer, liveness


BAD: list[tuple[object, str]] = [
    ({"updated_at": "2026-03-01T00:30:00Z", "name": "no id"}, MISSING_ID),
    ({"id": "x1", "name": "no updated_at"}, MISSING_UPDATED_AT),
    ({"id": "x2", "updated_at": "last tuesday"}, INVALID_UPDATED_AT),
    (["not", "an", "object"], NOT_AN_OBJECT),
]


@pytest.mark.parametrize(("bad", "reason"), BAD)
def test_a_bad_record_is_dead_lettered_and_the_run_goes_on(
    bad: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    pages = [
        page([*good(0, 5), bad, *good(5, 2, 1)], has_more=True, next_cursor="n1", request_id="r1"),
        page(good(10, 3, 2), request_id="r2"),
    ]
    sink = FakeSink()
    svc, observer, liveness = service(ListSource(pages), sink)
    with caplog.at_level(logging.WARNING):
        report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert [e.key for e in sink.published] == [
        r["id"] for r in [*good(0, 5), *good(5, 2, 1), *good(10, 3, 2)]
    ]
    [letter] = sink.dead_letters
    assert letter.reason == reason
    assert json.loads(letter.value) == bad  # the record as the API sent it
    assert (letter.request_id, letter.page, letter.position) == ("r1", 1, 5)
    assert (letter.resource, letter.topic, letter.producer_id) == ("contacts", "t.contacts", "p1")
    assert letter.run_id == report.run_id
    assert letter.record_id == (bad.get("id") if isinstance(bad, dict) else None)
    assert report.dead_lettered == 1
    assert observer.counts[f"dead_lettered:{reason}"] == 1
    checkpoint = sink.checkpoints["contacts"]
    assert checkpoint.updated_at == "2026-03-01T00:02:12Z"  # moved past the bad record
    assert liveness.progress_by_worker["contacts"] == 2  # one per page
    lines = [r for r in caplog.records if getattr(r, "event", None) == "dead_letter"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert getattr(lines[0], "reason") == reason  # noqa: B009


@pytest.mark.parametrize(("bad", "reason"), BAD)
def test_policy_fail_stops_the_run_and_keeps_the_checkpoint(bad: object, reason: str) -> None:
    previous = Checkpoint("contacts", "2026-02-01T00:00:00Z")
    sink = FakeSink(checkpoints={"contacts": previous})
    svc, observer, _ = service(
        ListSource([page([*good(0, 3), bad, *good(3, 3)])]), sink, policy="fail"
    )
    report = svc.sync_once("contacts")
    assert report.outcome == "failure"
    assert report.error is not None
    assert reason in report.error
    assert "request req-1, page 1, position 3" in report.error
    assert sink.dead_letters == []
    assert sink.checkpoints["contacts"] == previous
    assert sink.runs[0].aborted
    assert observer.outcomes == ["failure"]


def test_an_event_too_large_for_its_topic_is_dead_lettered_with_its_size() -> None:
    sink = FakeSink(too_large={"c002"})
    svc, observer, _ = service(ListSource([page(good(0, 4))]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert [e.key for e in sink.published] == ["c000", "c001", "c003"]
    [letter] = sink.dead_letters
    assert (letter.reason, letter.record_id, letter.updated_at) == (
        TOO_LARGE,
        "c002",
        "2026-03-01T00:00:02Z",
    )
    assert letter.detail == {"size": "999", "limit": "100"}
    assert json.loads(letter.value) == rec(2, "2026-03-01T00:00:02Z")
    assert observer.counts[f"dead_lettered:{TOO_LARGE}"] == 1
    assert "contacts" in sink.checkpoints


def test_an_event_the_broker_refuses_as_too_large_is_dead_lettered_before_the_commit() -> None:
    sink = FakeSink(refused_by_broker={"c001"})
    svc, _, _ = service(ListSource([page(good(0, 3))]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert [letter.record_id for letter in sink.dead_letters] == ["c001"]
    assert sink.runs[0].committed == [sink.checkpoints["contacts"]]


def test_a_dead_letter_kafka_does_not_acknowledge_fails_the_run() -> None:
    previous = Checkpoint("contacts", "2026-02-01T00:00:00Z")
    sink = FakeSink(dead_letters_fail=True, checkpoints={"contacts": previous})
    svc, _, _ = service(ListSource([page([*good(0, 2), {"id": "x"}, *good(2, 2)])]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "failure"
    assert "not acknowledged" in (report.error or "")
    assert sink.checkpoints["contacts"] == previous
    assert sink.runs[0].committed == []


def test_a_stop_interrupts_between_pages_without_a_checkpoint() -> None:
    stop = threading.Event()
    pages = [page(good(0, 2), has_more=True, next_cursor="n1"), page(good(2, 2))]

    class StoppingSource(ListSource):
        def pages(self, filter_gte: str | None, filter_lt: str | None = None):  # type: ignore[no-untyped-def]
            for served in super().pages(filter_gte):
                yield served
                stop.set()

    sink = FakeSink()
    svc, observer, _ = service(StoppingSource(pages), sink, stop=stop)
    report = svc.sync_once("contacts")
    assert report.outcome == "interrupted"
    assert report.published == 2
    assert sink.checkpoints == {}
    assert sink.runs[0].aborted
    assert observer.outcomes == ["interrupted"]


def test_a_source_that_ends_before_has_more_is_false_fails_the_run() -> None:
    sink = FakeSink()
    svc, _, _ = service(ListSource([page(good(0, 2), has_more=True, next_cursor="n1")]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "failure"
    assert "has_more" in (report.error or "")
    assert sink.checkpoints == {}


def test_an_incremental_run_asks_from_the_checkpoint_and_skips_its_boundary() -> None:
    previous = Checkpoint("contacts", "2026-03-01T00:00:01Z", frozenset({"c001"}))
    source = ListSource([page(good(1, 3))])
    sink = FakeSink(checkpoints={"contacts": previous})
    svc, observer, _ = service(source, sink)
    report = svc.sync_once("contacts")
    assert source.filters == ["2026-03-01T00:00:01.000Z"]
    assert [e.key for e in sink.published] == ["c002", "c003"]
    assert [e.value["op"] for e in sink.published] == ["u", "u"]
    assert report.stats.boundary_skipped == 1
    assert observer.counts["deduplicated"] == 1


def test_a_failed_run_reports_what_kafka_acknowledged() -> None:
    sink = FakeSink()
    pages = [
        page(good(0, 3), has_more=True, next_cursor="n1"),
        page(good(3, 2), has_more=True, next_cursor="n1"),  # a repeated cursor: loop guard
    ]
    svc, _, _ = service(ListSource(pages), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "failure"
    assert "repeated" in (report.error or "")
    assert report.published == 3


def test_a_successful_run_reports_the_instant_kafka_is_complete_up_to() -> None:
    served = datetime(2026, 3, 1, 0, 10, tzinfo=UTC)
    sink = FakeSink()
    svc, observer, _ = service(ListSource([page(good(0, 2), server_date=served)]), sink)
    assert svc.sync_once("contacts").outcome == "success"
    assert observer.complete["contacts"] == datetime(2026, 3, 1, 0, 9, 59, tzinfo=UTC)


def test_an_unreadable_checkpoint_fails_only_that_run() -> None:
    class Unreadable(FakeSink):
        def current(self, resource: str) -> Checkpoint | None:
            raise ValueError(f"checkpoint of {resource} is unreadable")

    svc, observer, _ = service(ListSource([page(good(0, 2))]), Unreadable())
    report = svc.sync_once("contacts")
    assert report.outcome == "failure"
    assert "unreadable" in (report.error or "")
    assert observer.outcomes == ["failure"]


def test_the_loop_reports_progress_while_it_waits_and_stops_promptly() -> None:
    stop = threading.Event()
    sink = FakeSink()
    svc, _, liveness = service(ListSource([page(good(0, 1))]), sink, stop=stop)
    svc.poll_interval_s = 3600.0
    worker = threading.Thread(target=svc._loop, args=("contacts",))
    worker.start()
    deadline = time.monotonic() + 10
    while not sink.runs and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()  # the hour-long wait ends at the stop
    assert liveness.done == ["contacts"]
    assert liveness.progress_by_worker["contacts"] >= 2


def test_a_reset_during_the_run_is_not_overwritten() -> None:
    previous = Checkpoint("contacts", "2026-02-01T00:00:00Z")
    sink = FakeSink(checkpoints={"contacts": previous})
    reset = Checkpoint("contacts", "2020-01-01T00:00:00Z", reset_by="ops@host")

    class ResetMidRun(ListSource):
        def pages(self, filter_gte: str | None, filter_lt: str | None = None):  # type: ignore[no-untyped-def]
            sink.checkpoints["contacts"] = reset  # `askelephant-kafka reset` elsewhere
            yield from super().pages(filter_gte)

    svc, _, _ = service(ResetMidRun([page(good(0, 2))]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "failure"
    assert "changed while the run was going" in (report.error or "")
    assert sink.checkpoints["contacts"] == reset


def five_pages() -> list[Any]:
    return [
        page(good(i * 2, 2, i), has_more=i < 4, next_cursor=f"n{i}" if i < 4 else None)
        for i in range(5)
    ]


def test_every_batch_of_pages_leaves_a_progress_mark_and_success_clears_it() -> None:
    sink = FakeSink()
    svc, _, _ = service(ListSource(five_pages()), sink)
    svc.batch_pages = 2
    assert svc.sync_once("contacts").outcome == "success"
    [run] = sink.runs
    assert [m.pages for m in run.marked] == [2, 4]
    assert all(m.snapshot and m.based_on is None for m in run.marked)
    assert sink.marks == {}  # the completed run cleared it


def test_a_failed_run_resumes_from_its_last_mark_with_the_same_dedup() -> None:
    class Failing(ListSource):
        def pages(self, filter_gte: str | None, filter_lt: str | None = None):  # type: ignore[no-untyped-def]
            for n, served in enumerate(super().pages(filter_gte)):
                if n == 3 and len(self.filters) == 1:
                    raise ConnectionError("API gone mid-run")
                yield served

    source = Failing(five_pages())
    sink = FakeSink()
    svc, _, _ = service(source, sink)
    svc.batch_pages = 2
    first = svc.sync_once("contacts")
    assert first.outcome == "failure"
    mark = sink.marks["contacts"]
    assert mark.pages == 2
    published_before = len(sink.published)  # pages 1-3 reached Kafka (at-least-once)
    boundary = five_pages()[1].records[-1]  # the API serves `gte` the mark: its boundary on
    source.pages_to_serve = [page([boundary], has_more=True, next_cursor="b"), *five_pages()[2:]]
    second = svc.sync_once("contacts")
    assert second.outcome == "success", second.error
    assert second.resumed_from == mark.mark.updated_at
    assert source.filters[-1] == mark.mark.filter_value
    assert second.snapshot  # still the bulk export: op "r"
    resumed = [e.value for e in sink.published[published_before:]]
    assert {e["op"] for e in resumed} == {"r"}
    # the boundary record was published before the mark: skipped, not published again
    assert [e["id"] for e in resumed] == [r["id"] for p in five_pages()[2:] for r in p.records]
    assert sink.marks == {}
    assert "contacts" in sink.checkpoints


def test_a_mark_of_another_starting_point_is_ignored() -> None:
    sink = FakeSink()
    svc, _, _ = service(ListSource(five_pages()), sink)
    svc.batch_pages = 2
    assert svc.sync_once("contacts").outcome == "success"
    stale = sink.runs[0].marked[0]
    sink.marks["contacts"] = stale  # written before the checkpoint that is stored now
    source = ListSource([page(good(20, 1, 9))])
    svc.source_for = lambda _r: source
    report = svc.sync_once("contacts")
    assert report.resumed_from is None
    assert source.filters == [sink.runs[0].committed[0].filter_value]  # type: ignore[union-attr]


class WindowedSource:
    """Honours `gte`/`lt` (three records a page); counts the traversals open at once."""

    def __init__(self, records: list[dict[str, Any]], server_date: float = NOW) -> None:
        self.records = sorted(records, key=lambda r: (instant_micros(r["updated_at"]), r["id"]))
        self.server_date = datetime.fromtimestamp(server_date, UTC)
        self.windows: list[tuple[str | None, str | None]] = []
        self.open = self.most_open = 0
        self.lock = threading.Lock()

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        with self.lock:
            self.windows.append((filter_gte, filter_lt))
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            low = instant_micros(filter_gte) if filter_gte else None
            high = instant_micros(filter_lt) if filter_lt else None
            chosen = [
                r
                for r in self.records
                if (low is None or instant_micros(r["updated_at"]) >= low)
                and (high is None or instant_micros(r["updated_at"]) < high)
            ]
            for start in range(0, max(len(chosen), 1), 3):
                time.sleep(0.002)  # let the workers overlap
                more = start + 3 < len(chosen)
                yield page(
                    chosen[start : start + 3],
                    has_more=more,
                    next_cursor=f"o{start + 3}" if more else None,
                    server_date=self.server_date,
                )
        finally:
            with self.lock:
                self.open -= 1


def test_a_sliced_export_hands_more_windows_than_workers_out_and_publishes_each_once() -> None:
    # skewed like real data: a few old records, most of them in the last hours
    old = [rec(i, f"2026-01-{1 + i:02d}T00:00:00Z") for i in range(4)]
    recent = [rec(i, f"2026-03-01T{(i % 24):02d}:{i % 60:02d}:00Z") for i in range(4, 60)]
    source = WindowedSource([*old, *recent])
    sink = FakeSink()
    svc, _, _ = service(ListSource([]), sink)
    svc.source_for = lambda _r: source
    svc.backfill_slices = 2
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert sorted(e.key for e in sink.published) == sorted(r["id"] for r in source.records)
    windows = [w for w in source.windows if w != (None, None)]  # the probe page aside
    assert len(windows) >= 2 * WINDOWS_PER_SLICE  # planned, then split for idle workers
    assert source.most_open <= 2  # workers, not windows, bound the concurrency
    newest = max(source.records, key=lambda r: instant_micros(r["updated_at"]))
    assert sink.checkpoints["contacts"].updated_at == newest["updated_at"]


class FailingOnce(WindowedSource):
    """Fails the traversal that asks for its `fail_at`-th page overall, once."""

    def __init__(self, records: list[dict[str, Any]], server_date: float, fail_at: int) -> None:
        super().__init__(records, server_date)
        self.fail_at, self.served = fail_at, 0

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        for served in super().pages(filter_gte, filter_lt):
            with self.lock:
                self.served += 1
                failing = self.served == self.fail_at
            if failing:
                raise ConnectionError("the API went away")
            yield served


def test_an_interrupted_sliced_export_resumes_every_window_from_its_mark() -> None:
    # a record a day from 2026-01-01, the API's clock the day after the last: 8 windows of
    # some 8 records (3 pages) each; the 12th page fails
    first_day = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    days = [datetime.fromtimestamp(first_day + i * 86_400, UTC) for i in range(60)]
    records = [rec(i, day.strftime("%Y-%m-%dT%H:%M:%SZ")) for i, day in enumerate(days)]
    source = FailingOnce(records, server_date=first_day + 61 * 86_400, fail_at=12)
    sink = FakeSink()
    svc, _, _ = service(ListSource([]), sink)
    svc.source_for = lambda _r: source
    svc.backfill_slices, svc.batch_pages = 2, 3
    first = svc.sync_once("contacts")
    assert first.outcome == "failure"
    assert "the API went away" in (first.error or "")
    mark = sink.marks["contacts"]
    assert mark.mark is None
    assert len(mark.windows) >= 2 * WINDOWS_PER_SLICE  # planned, and any split off since
    states = {(w.done, w.mark is not None) for w in mark.windows}
    assert {(True, True), (False, True), (False, False)} <= states  # done, started, untouched
    asked_before = len(source.windows)

    second = svc.sync_once("contacts")
    assert second.outcome == "success", second.error
    done = sum(w.done for w in mark.windows)
    assert second.resumed_from == f"{done} of {len(mark.windows)} windows done"
    # no probe and no finished window asked for again; a started one resumes at its mark
    again = source.windows[asked_before:]
    assert (None, None) not in again
    finished = {(w.gte, w.lt) for w in mark.windows if w.done}
    assert not finished & set(again)
    resumed = {(w.mark.filter_value, w.lt) for w in mark.windows if w.mark and not w.done}
    assert resumed <= set(again)
    # everything is in Kafka; what was published twice came after the last mark only
    keys = [e.key for e in sink.published]
    assert set(keys) == {r["id"] for r in source.records}
    assert len(keys) - len(set(keys)) <= 3 * 3  # at most a batch: 3 pages of 3 records
    newest = max(source.records, key=lambda r: instant_micros(r["updated_at"]))
    assert sink.checkpoints["contacts"].updated_at == newest["updated_at"]
    assert "contacts" not in sink.marks  # the completed export cleared its mark
