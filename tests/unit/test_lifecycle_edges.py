"""Issue 17's failures at the edges of a run's lifecycle, one test (or more) each.

Every test here failed on the main of 0938c08; the numbers are the issue's."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.config import ConfigError, load_settings, worst_page_seconds
from producer.kafka.listings import Listing, assemble, chunked
from producer.observability.health import (
    DEFAULT_STALL_TIMEOUT_S,
    ERRORS_IN_A_ROW_UNHEALTHY,
    CheckResult,
    HealthState,
)
from producer.pipeline.dead_letters import TOO_LARGE, DeadLetter
from producer.pipeline.deletes import DeleteIndex
from producer.pipeline.ports import LaneError, SourcePage, TraversalInterruptedError
from producer.pipeline.prefetch import PrefetchingSource
from producer.redrive import TOMBSTONED, RedriveReport, redrive
from producer.service import SyncService
from producer.sync.checkpoint import FORCED, Checkpoint, supersedes
from producer.sync.chunks import CHUNK_BYTES
from producer.sync.progress import Progress
from producer.sync.run import INVALID_UPDATED_AT
from producer.sync.timestamps import format_instant, instant_micros
from tests.support.fakes import (
    FakeLiveness,
    FakeObserver,
    FakeRunSink,
    FakeSink,
    ListSource,
    page,
)
from tests.unit.test_config import env
from tests.unit.test_deletes import T0, deliver, receiver, reconciler, version
from tests.unit.test_service import WindowedSource, good, rec, service

# ------------------------------------------------------------------ 7: unrepresentable data

OVERFLOWING = "0001-01-01T00:00:00+14:00"
"""A valid local time whose UTC instant is before year 1: no datetime holds it."""


def test_7_an_updated_at_no_datetime_can_hold_is_dead_lettered() -> None:
    bad = {"id": "x1", "updated_at": OVERFLOWING}
    sink = FakeSink()
    svc, _, _ = service(ListSource([page([*good(0, 2), bad, *good(2, 2)])]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert [letter.reason for letter in sink.dead_letters] == [INVALID_UPDATED_AT]
    assert len(sink.published) == 4


@pytest.mark.parametrize("field", ["created_at", "last_activity_at"])
def test_7_a_date_field_no_datetime_can_hold_never_fails_the_run(field: str) -> None:
    odd = {**good(9, 1)[0], field: OVERFLOWING}
    sink = FakeSink()
    svc, _, _ = service(ListSource([page([*good(0, 2), odd])]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert len(sink.published) + len(sink.dead_letters) == 3


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from([OVERFLOWING, "9999-12-31T23:59:59-14:00", "2026-02-30T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["created_at", "email", "name", "custom_fields", "tags", "extra"]), _JSON
    ),
    updated_at=st.sampled_from(["2026-03-01T00:00:00Z", OVERFLOWING, "+00:00", "2026-03-01"])
    | st.text(max_size=12),
)
def test_7_any_record_data_is_a_per_record_outcome_never_a_failed_run(
    fields: dict[str, object], updated_at: str
) -> None:
    record = {**fields, "id": "x1", "updated_at": updated_at}
    sink = FakeSink()
    svc, _, _ = service(ListSource([page([*good(0, 2), record])]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert len(sink.published) + len(sink.dead_letters) == 3


# ------------------------------------------------------------------ 2: a worker never dies


def _run_loop(svc: SyncService) -> threading.Thread:
    worker = threading.Thread(target=svc._loop, args=("contacts",), daemon=True)
    worker.start()
    return worker


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_2_a_poll_due_while_reconciliation_holds_the_lane_waits_for_it() -> None:
    stop = threading.Event()
    sink = FakeSink()
    svc, _, _ = service(ListSource([page(good(0, 3))]), sink, stop=stop)
    svc.poll_interval_s = 3600.0
    lane = svc.run_lock("contacts")
    lane.acquire()  # a reconciliation of contacts is going on
    worker = _run_loop(svc)
    time.sleep(0.3)
    assert worker.is_alive()
    assert sink.runs == []
    lane.release()
    _until(lambda: "contacts" in sink.checkpoints)
    assert worker.is_alive()
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()


def test_2_an_unexpected_exception_is_logged_counted_shown_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    sink = FakeSink()
    svc, observer, liveness = service(ListSource([page(good(0, 3))]), sink, stop=stop)
    svc.poll_interval_s = 3600.0
    svc.worker_backoff_s = 0.05
    broken = {"left": 2}
    started = observer.run_started

    def flaky_run_started(resource: str, now: float | None = None) -> None:
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("observer broke its contract")
        started(resource, now)

    observer.run_started = flaky_run_started  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        worker = _run_loop(svc)
        _until(lambda: observer.counts["worker_errors"] == 1)
        assert liveness.errors["contacts"] == ("RuntimeError: observer broke its contract", 1)
        _until(lambda: "contacts" in sink.checkpoints)  # retried, with backoff
    assert worker.is_alive()
    assert observer.counts["worker_errors"] == 2
    assert "contacts" not in liveness.errors  # recovered
    lines = [r for r in caplog.records if getattr(r, "event", None) == "worker_error"]
    assert len(lines) == 2
    assert all(r.exc_info or r.exc_text for r in lines)  # the traceback is in the log
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()


def test_2_healthz_shows_a_failing_worker_and_fails_when_it_cannot_recover() -> None:
    health = HealthState(stall_timeout_s=60)
    health.progress("contacts")
    health.failing("contacts", "RuntimeError: boom", 1)
    check = health.liveness().checks["worker:contacts"]
    assert check.ok
    assert "1 unexpected error(s) in a row: RuntimeError: boom" in check.detail
    health.failing("contacts", "RuntimeError: boom", ERRORS_IN_A_ROW_UNHEALTHY)
    assert not health.liveness().checks["worker:contacts"].ok
    health.recovered("contacts")
    assert health.liveness().checks["worker:contacts"] == CheckResult(
        True, health.liveness().checks["worker:contacts"].detail
    )
    assert "unexpected" not in health.liveness().checks["worker:contacts"].detail


# ------------------------------------------------------------------ 11: liveness granularity


def test_11_an_idle_worker_reports_often_enough_for_a_short_stall_setting() -> None:
    stop = threading.Event()
    sink = FakeSink()
    svc, _, liveness = service(ListSource([page(good(0, 1))]), sink, stop=stop)
    svc.poll_interval_s = 3600.0
    svc.liveness_step_s = SyncService(
        resources=["contacts"],
        topic_for=str,
        source_for=lambda _r: ListSource([]),
        sink=sink,
        checkpoints=sink,
        observer=FakeObserver(),
        liveness=FakeLiveness(),
        producer_id="p",
        liveness_stall_s=0.8,
    ).liveness_step_s
    assert svc.liveness_step_s == pytest.approx(0.2)
    worker = _run_loop(svc)
    _until(lambda: "contacts" in sink.checkpoints)
    reported = liveness.progress_by_worker["contacts"]
    time.sleep(1.0)  # idle: the next run is an hour away
    assert liveness.progress_by_worker["contacts"] - reported >= 3
    stop.set()
    worker.join(timeout=5)


def test_11_the_default_stall_clears_one_pages_worst_case() -> None:
    settings = load_settings(env())
    worst = worst_page_seconds(settings.http_timeout_seconds, settings.max_retry_wait_seconds)
    assert settings.liveness_stall_seconds > worst
    assert settings.liveness_stall_seconds == DEFAULT_STALL_TIMEOUT_S


def test_11_a_stall_setting_that_cannot_work_is_refused() -> None:
    with pytest.raises(ConfigError, match="LIVENESS_STALL_SECONDS") as info:
        load_settings(env(LIVENESS_STALL_SECONDS="20", HTTP_TIMEOUT_SECONDS="30"))
    assert "HTTP_TIMEOUT_SECONDS" in str(info.value)


# ------------------------------------------------------------------ 1: partial listings


class _StopsAfterFirstPage:
    """300 live users in three pages; the service is stopped while the first is handed out."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        users = [{"id": f"u{i:03d}", "updated_at": "2026-02-01T00:00:00Z"} for i in range(300)]
        self.pages_to_serve = [
            page(users[:100], has_more=True, next_cursor="c1"),
            page(users[100:200], has_more=True, next_cursor="c2"),
            page(users[200:]),
        ]

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        yield self.pages_to_serve[0]
        self.stop.set()
        yield from self.pages_to_serve[1:]


def _live_users() -> list[tuple[str, bytes | None]]:
    return [(f"u{i:03d}", version(f"u{i:03d}")) for i in range(300)]


def test_1_a_reconciliation_stopped_mid_listing_deletes_nothing() -> None:
    stop = threading.Event()
    hook, sink, deletes = reconciler([], _live_users(), threading.Lock())
    hook.source_for = lambda _r: PrefetchingSource(_StopsAfterFirstPage(stop), stop=stop)
    report = hook.reconcile("users")
    assert report.outcome == "interrupted"
    assert sink.published == []
    assert sink.tombstones == []
    assert deletes.written == []


def test_1_a_listing_that_ends_before_has_more_is_false_deletes_nothing() -> None:
    hook, sink, deletes = reconciler([], _live_users(), threading.Lock())
    first_only = _StopsAfterFirstPage(threading.Event()).pages_to_serve[:1]
    hook.source_for = lambda _r: ListSource(first_only)
    report = hook.reconcile("users")
    assert report.outcome == "failure"
    assert "has_more" in (report.error or "")
    assert (sink.published, sink.tombstones, deletes.written) == ([], [], [])


def test_1_a_prefetched_traversal_never_ends_quietly_on_a_stop() -> None:
    stop = threading.Event()
    source = PrefetchingSource(_StopsAfterFirstPage(stop), stop=stop)
    served: list[SourcePage] = []
    with pytest.raises(TraversalInterruptedError):
        served.extend(source.pages(None))
    assert len(served) < 3


# ------------------------------------------------------------------ 6: late-visible writes

SETTLE_S = 5.0
T_ZERO = 1_800_000_000.0  # the API's epoch seconds when the test's writes begin


@dataclass
class _LateApi:
    """An API whose writes become visible up to some delay after their `updated_at` stamp
    (a transaction that commits late, a lagging read replica). It serves each record's newest
    visible version, `updated_at:asc`, two per page, with its clock in the `Date` header."""

    writes: list[tuple[str, float, float]]
    """(id, stamp, visible_at) in seconds since T_ZERO."""
    now: float = 0.0

    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        newest: dict[str, float] = {}
        for record_id, stamp, visible_at in self.writes:
            if visible_at <= self.now and stamp > newest.get(record_id, -1.0):
                newest[record_id] = stamp
        gte = None if filter_gte is None else instant_micros(filter_gte)
        rows = sorted(
            (_micros(stamp), record_id)
            for record_id, stamp in newest.items()
            if gte is None or _micros(stamp) >= gte
        )
        served = datetime.fromtimestamp(T_ZERO + self.now, UTC)
        chunks = [rows[i : i + 2] for i in range(0, len(rows), 2)] or [[]]
        for n, chunk in enumerate(chunks):
            more = n + 1 < len(chunks)
            records = [
                {"id": i, "updated_at": format_instant(t), "created_at": "2020-01-01T00:00:00Z"}
                for t, i in chunk
            ]
            yield page(
                records, has_more=more, next_cursor=f"c{n}" if more else None, server_date=served
            )


def _micros(stamp: float) -> int:
    return round((T_ZERO + stamp) * 1_000_000)


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.integers(0, 20_000).map(lambda ms: ms / 1000),
            st.integers(0, int(SETTLE_S * 1000)).map(lambda ms: ms / 1000),
        ),
        min_size=1,
        max_size=12,
    ),
    poll_every=st.sampled_from([0.3, 1.0, 2.5]),
)
def test_6_writes_visible_up_to_the_settle_window_late_are_never_lost(
    writes: list[tuple[str, float, float]], poll_every: float
) -> None:
    api = _LateApi([(i, stamp, stamp + delay) for i, stamp, delay in writes])
    sink = FakeSink()
    svc = SyncService(
        resources=["contacts"],
        topic_for=lambda r: f"t.{r}",
        source_for=lambda _r: api,
        sink=sink,
        checkpoints=sink,
        observer=FakeObserver(),
        liveness=FakeLiveness(),
        producer_id="p",
        clock=lambda: T_ZERO + api.now,
        settle_s=SETTLE_S,
    )
    end = max(visible for _, _, visible in api.writes)
    while True:  # until one poll after the last write became visible
        assert svc.sync_once("contacts").outcome == "success"
        if api.now > end:
            break
        api.now += poll_every
    published = {(e.key, instant_micros(e.updated_at)) for e in sink.published}
    final = {}
    for record_id, stamp, _ in api.writes:
        final[record_id] = max(final.get(record_id, -1.0), stamp)
    missing = {(i, _micros(t)) for i, t in final.items()} - published
    assert not missing, f"never reached Kafka: {missing}"


def test_6_with_the_old_one_second_margin_a_late_write_is_lost() -> None:
    """The issue's case, as a control: the property above fails without the settle window."""
    api = _LateApi([("a", 0.0, 3.0), ("b", 1.0, 1.0)])
    sink = FakeSink()
    svc, _, _ = service(ListSource([]), sink)
    svc.source_for = lambda _r: api
    svc.clock = lambda: T_ZERO + api.now
    for now in (2.0, 4.0, 6.0):
        api.now = now
        svc.sync_once("contacts")
    assert "a" not in {e.key for e in sink.published}  # 1 s margin: lost


# ------------------------------------------------------------------ 5: two clocks


def _delete_then_poll(deleted_object: dict[str, str], polled_at: str) -> list[str]:
    """A webhook delete of cnt_1 at T0 (the sender's clock), then a poll that read cnt_1
    before the delete, stamped `polled_at` by the API's database clock."""
    hook, sink, deletes, _ = receiver()
    body = json.dumps(
        {
            "type": "v1.contact.deleted",
            "created_at": format_instant(T0),
            "data": {"object": deleted_object},
        }
    ).encode()
    assert deliver(hook, body, "msg_1") == (200, "published")
    svc = SyncService(
        resources=["contacts"],
        topic_for=lambda r: f"t.{r}",
        source_for=lambda _r: ListSource([page([{"id": "cnt_1", "updated_at": polled_at}])]),
        sink=sink,
        checkpoints=sink,
        observer=FakeObserver(),
        liveness=FakeLiveness(),
        producer_id="p",
        clock=lambda: T0 / 1e6 + 60,
        deletes=deletes.index,
    )
    assert svc.sync_once("contacts").outcome == "success"
    return [str(e.value["op"]) for e in sink.published]


def test_5_a_sender_clock_behind_the_database_does_not_resurrect() -> None:
    # the database stamped the last version 0.2 s after the sender's delete instant
    skewed = format_instant(T0 + 200_000)
    assert _delete_then_poll({"id": "cnt_1"}, skewed) == ["d"]  # settle margin
    assert _delete_then_poll({"id": "cnt_1", "updated_at": skewed}, skewed) == ["d"]  # like


def test_5_a_version_newer_than_the_deleted_objects_own_is_published() -> None:
    # the object's own updated_at is known: a later version is a re-creation, not a ghost
    newer = format_instant(T0 + 20_000_000)
    assert _delete_then_poll({"id": "cnt_1", "updated_at": format_instant(T0)}, newer) == [
        "d",
        "r",  # the poll is the resource's first run: a bulk export reads
    ]


# ------------------------------------------------------------------ 3 and 4: redrive


def _letter(record_id: str, updated_at: str) -> DeadLetter:
    record = {"id": record_id, "updated_at": updated_at, "created_at": "2020-01-01T00:00:00Z"}
    return DeadLetter(
        resource="contacts",
        reason=TOO_LARGE,
        message="too large",
        value=json.dumps(record).encode(),
        run_id="r0",
        producer_id="p",
        topic="t.contacts",
        record_id=record_id,
        updated_at=updated_at,
    )


def _redrive(
    letters: list[DeadLetter],
    sink: FakeSink,
    *,
    on_topic: dict[str, int] | None = None,
    deletes: DeleteIndex | None = None,
) -> RedriveReport:
    return redrive(
        letters,
        sink=sink,
        topic_for={"contacts": "t.contacts"},
        producer_id="p",
        newest_on_topic={"contacts": on_topic or {}},
        now_ms=0,
        deletes=deletes,
    )


def test_4_redrive_never_resurrects_a_record_the_deletes_topic_knows_deleted() -> None:
    index = DeleteIndex(retention_us=10**15)
    index.note_deleted("contacts", "c1", T0, 0)  # change topic compacted: no trace there
    sink = FakeSink()
    report = _redrive(
        [_letter("c1", format_instant(T0 - 1)), _letter("c2", "2026-01-01T00:00:00Z")],
        sink,
        deletes=index,
    )
    assert [e.key for e in sink.published] == ["c2"]
    assert report.skipped["contacts"] == 1


def test_4_redrive_never_resurrects_a_record_whose_last_word_is_a_tombstone() -> None:
    sink = FakeSink()
    report = _redrive([_letter("c1", "2026-01-01T00:00:00Z")], sink, on_topic={"c1": TOMBSTONED})
    assert sink.published == []
    assert report.skipped["contacts"] == 1


def test_3_redrive_touches_no_progress_mark_or_checkpoint_of_the_lane() -> None:
    sink = FakeSink()
    mark = Progress(
        resource="contacts",
        mark=Checkpoint("contacts", "2026-01-01T00:00:00Z"),
        snapshot=False,
        based_on=None,
        run_id="run-1",
        pages=3,
        written_at="2026-01-01T00:00:00Z",
    )
    sink.marks["contacts"] = mark  # an interrupted (or running) run's progress
    report = _redrive([_letter("c1", "2026-01-01T00:00:00Z")], sink)
    assert report.published["contacts"] == 1
    assert sink.marks == {"contacts": mark}
    assert all(run.committed == [] for run in sink.runs)
    assert "contacts" not in sink.checkpoints


# ------------------------------------------------------------------ 9: compare-and-set


def _stored(updated_at: str, token: str, based_on: str | None) -> Checkpoint:
    return Checkpoint("contacts", updated_at, token=token, based_on=based_on)


def _replay(records: list[Checkpoint]) -> Checkpoint | None:
    """What every reader of the topic holds after reading `records` in order."""
    latest: Checkpoint | None = None
    for record in records:
        if supersedes(record, latest):
            latest = record
    return latest


def test_9_a_run_that_read_the_checkpoint_before_a_reset_loses_to_it() -> None:
    first = _stored("2026-01-01T00:00:00Z", "t1", None)
    reset = _stored("2020-01-01T00:00:00Z", "t2", FORCED)
    late_run = _stored("2026-02-01T00:00:00Z", "t3", "t1")  # computed from `first`
    assert _replay([first, reset, late_run]) is reset
    assert _replay([first, late_run, reset]) is reset  # a reset after it replaces it too


def test_9_of_two_writers_from_one_checkpoint_the_first_to_land_wins() -> None:
    first = _stored("2026-01-01T00:00:00Z", "t1", None)
    a = _stored("2026-02-01T00:00:00Z", "a", "t1")
    b = _stored("2026-03-01T00:00:00Z", "b", "t1")
    assert _replay([first, a, b]) is a
    assert _replay([first, b, a]) is b
    assert _replay([first, a, b, _stored("2026-04-01T00:00:00Z", "c", "a")]).token == "c"


def test_9_records_of_older_releases_and_re_reads_are_taken_as_before() -> None:
    legacy = Checkpoint("contacts", "2026-01-01T00:00:00Z")  # no token
    run = _stored("2026-02-01T00:00:00Z", "t1", None)
    assert _replay([run, legacy]) is legacy
    assert supersedes(run, run)  # its writer remembered it, then read it back


def test_9_token_and_based_on_survive_the_topic() -> None:
    record = _stored("2026-02-01T00:00:00Z", "t1", "t0")
    again = Checkpoint.from_json(record.to_json())
    assert (again.token, again.based_on) == ("t1", "t0")
    assert Checkpoint.from_json(Checkpoint("contacts", None).to_json()).token is None


# ------------------------------------------------------------------ 10: windows follow data


def test_10_a_burst_is_shared_by_the_workers_not_left_to_one_window() -> None:
    """A month of history, then 600 records within 6 seconds (a bulk import): the even
    windows put them all in one; busy windows must hand their rest to idle workers."""
    old = [rec(i, "2026-02-01T00:00:00Z") for i in range(2)]
    burst = [rec(i, format_instant(T0 + (i - 2) * 10_000)) for i in range(2, 602)]
    source = WindowedSource([*old, *burst], server_date=T0 / 1e6 + 30)
    sink = FakeSink()
    svc, _, _ = service(ListSource([]), sink)
    svc.source_for = lambda _r: source
    svc.backfill_slices = 4
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert sorted(e.key for e in sink.published) == sorted(r["id"] for r in source.records)
    burst_start, burst_end = T0, T0 + 6_000_000
    serving_the_burst = {
        (gte, lt)
        for gte, lt in source.windows
        if gte is not None
        and instant_micros(gte) < burst_end
        and (lt is None or instant_micros(lt) > burst_start)
    }
    assert len(serving_the_burst) >= 4  # before: 1 (the window that held it all)
    assert source.most_open > 1
    assert sink.checkpoints["contacts"].updated_at == burst[-1]["updated_at"]


# ------------------------------------------------------------------ 5: expired history


class MemoryListings:
    def __init__(self) -> None:
        self.saved: dict[str, Listing] = {}

    def load(self, resource: str) -> Listing | None:
        return self.saved.get(resource)

    def save(self, resource: str, ids: Iterable[str], listed_at_us: int) -> None:
        self.saved[resource] = Listing(frozenset(ids), listed_at_us)


def test_5_reconciliation_finds_a_delete_whose_change_topic_history_expired() -> None:
    listings = MemoryListings()
    # u3 was synced long ago: its messages are past the change topic's retention
    first, _, _ = reconciler(["u1", "u2", "u3"], [("u1", version("u1"))], threading.Lock())
    first.listings = listings
    assert first.reconcile("users").outcome == "success"
    assert listings.saved["users"].ids == {"u1", "u2", "u3"}
    second, sink, deletes = reconciler(["u1", "u2"], [("u1", version("u1"))], threading.Lock())
    second.listings = listings
    report = second.reconcile("users")
    assert report.outcome == "success", report.error
    assert report.deleted == ["u3"]
    [event] = sink.published
    assert (event.key, event.value["op"], event.value["before"]["id"]) == ("u3", "d", "u3")
    assert sink.tombstones == ["u3"]
    assert [w[1] for w in deletes.written] == ["u3"]
    assert listings.saved["users"].ids == {"u1", "u2"}


def test_5_a_listing_is_kept_only_from_a_finished_traversal() -> None:
    listings = MemoryListings()
    stop = threading.Event()
    hook, _, _ = reconciler([], [], threading.Lock())
    hook.listings = listings
    hook.source_for = lambda _r: PrefetchingSource(_StopsAfterFirstPage(stop), stop=stop)
    assert hook.reconcile("users").outcome == "interrupted"
    assert listings.saved == {}


@given(ids=st.sets(st.text(min_size=1, max_size=40), max_size=300), limit=st.integers(64, 4096))
def test_5_a_listing_round_trips_through_chunks_and_a_missing_chunk_is_no_listing(
    ids: set[str], limit: int
) -> None:
    parts = chunked(ids, limit)
    assert all(len(p) <= limit or len(json.loads(p)) == 1 for p in parts)
    header = {"chunks": len(parts), "ids": len(ids)}
    assert assemble(header, dict(enumerate(parts))) == ids
    if len(parts) > 1:
        assert assemble(header, dict(enumerate(parts[1:], start=1))) is None


# ------------------------------------------------------------------ 8a: a boundary of any size

BOUNDARY_AT = "2026-03-02T00:00:00Z"


def _one_instant_pages(count: int, per_page: int = 1_000) -> list[SourcePage]:
    records = [{"id": f"cnt_{i:05d}", "updated_at": BOUNDARY_AT} for i in range(count)]
    return [
        page(
            records[i : i + per_page],
            has_more=i + per_page < count,
            next_cursor=f"c{i}" if i + per_page < count else None,
        )
        for i in range(0, count, per_page)
    ]


def _chunked_sink() -> FakeSink:
    sink = FakeSink(chunk_bytes=CHUNK_BYTES)
    sink.checkpoints["contacts"] = Checkpoint("contacts", "2026-03-01T00:00:00Z")
    return sink


def test_8a_a_boundary_of_25000_versions_at_one_instant_is_replayed_with_none_republished() -> None:
    sink = _chunked_sink()
    svc, _, _ = service(ListSource(_one_instant_pages(25_000)), sink)
    svc.batch_pages = 5  # progress marks of up to 20,000 ids on the way
    assert svc.sync_once("contacts").outcome == "success"
    assert len(sink.published) == 25_000
    stored = sink.checkpoints["contacts"]
    assert stored.boundary_complete
    assert len(stored.boundary_ids) == 25_000
    # no record grows with the boundary: it went as chunks
    assert sink.chunk_records > 1
    assert sink.largest_record <= CHUNK_BYTES

    assert svc.sync_once("contacts").outcome == "success"  # `gte` the same instant again
    assert len(sink.published) == 25_000, "the boundary was republished"


def test_8a_a_run_resumed_from_a_mark_of_15000_versions_at_one_instant_republishes_none() -> None:
    pages = _one_instant_pages(25_000)
    stop = threading.Event()

    class StoppingSource:
        def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[Any]:
            for n, one in enumerate(pages):
                yield one
                if n == 14:  # page 15 is taken and marked (batch of 5): stop there
                    stop.set()

    sink = _chunked_sink()
    svc, _, _ = service(ListSource([]), sink, stop=stop)
    svc.source_for = lambda _r: StoppingSource()
    svc.batch_pages = 5
    assert svc.sync_once("contacts").outcome == "interrupted"
    assert len(sink.published) == 15_000
    mark = sink.marks["contacts"].mark
    assert mark is not None
    assert len(mark.boundary_ids) == 15_000

    stop.clear()
    svc.source_for = lambda _r: ListSource(pages)
    assert svc.sync_once("contacts").outcome == "success"
    keys = [e.key for e in sink.published]
    assert len(keys) == len(set(keys)) == 25_000, "the resumed run republished the mark's ids"


# ------------------------------------------------------------------ 8: a stuck lane


class _KafkaRefusesEveryCommit(FakeSink):
    def begin(self, resource: str, run_id: str) -> FakeRunSink:
        run = super().begin(resource, run_id)

        def refuse(*_a: object, **_k: object) -> None:
            raise LaneError("transaction of contacts not committed: Local: Timed out")

        run.commit = refuse  # type: ignore[method-assign]
        return run


def test_8_a_lane_that_cannot_make_progress_fails_liveness_and_recovers() -> None:
    stop = threading.Event()
    sink = _KafkaRefusesEveryCommit()
    svc, _, liveness = service(ListSource([page(good(0, 2))]), sink, stop=stop)
    svc.poll_interval_s = 0.01
    worker = _run_loop(svc)
    _until(lambda: liveness.errors.get("contacts", ("", 0))[1] >= ERRORS_IN_A_ROW_UNHEALTHY)
    error, _ = liveness.errors["contacts"]
    assert error.startswith("Kafka: LaneError: transaction of contacts not committed")
    health = HealthState(stall_timeout_s=60)
    health.progress("contacts")
    health.failing("contacts", error, ERRORS_IN_A_ROW_UNHEALTHY)
    assert not health.liveness().checks["worker:contacts"].ok  # /healthz fails: restart it
    sink.begin = lambda resource, run_id: FakeSink.begin(sink, resource, run_id)  # type: ignore[method-assign]
    _until(lambda: "contacts" not in liveness.errors)  # Kafka takes writes again
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()


class _ApiDown:
    def pages(self, filter_gte: str | None, filter_lt: str | None = None) -> Iterator[SourcePage]:
        raise ConnectionError("the API is down")
        yield  # a generator, like every source


def test_8_an_api_outage_alone_never_fails_liveness() -> None:
    stop = threading.Event()
    sink = FakeSink()
    svc, observer, liveness = service(ListSource([]), sink, stop=stop)
    svc.source_for = lambda _r: _ApiDown()
    svc.poll_interval_s = 0.01
    worker = _run_loop(svc)
    _until(lambda: observer.outcomes.count("failure") >= ERRORS_IN_A_ROW_UNHEALTHY + 2)
    stop.set()
    worker.join(timeout=5)
    assert liveness.errors == {}
