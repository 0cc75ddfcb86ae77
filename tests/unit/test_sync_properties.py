"""Property tests of the sync algorithm over random datasets, page sizes and concurrent updates."""

import random
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import WindowProgress
from producer.sync.run import CLOCK_MARGIN_US, SyncRun, Version
from producer.sync.slices import plan_windows, restore_windows, window_progress
from producer.sync.timestamps import instant_micros
from tests.support.fake_source import FakeSource, drive, take_page


@dataclass(frozen=True)
class Change:
    after_page: int
    index: int
    tie: bool
    create: bool


changes = st.builds(
    Change,
    after_page=st.integers(0, 6),
    index=st.integers(0, 50),
    tie=st.booleans(),
    create=st.booleans(),
)
run_plans = st.lists(
    st.tuples(
        st.lists(changes, max_size=8),  # changes during the run
        st.lists(changes, max_size=4),  # changes before the run
        st.one_of(st.none(), st.integers(0, 4)),  # killed after this many pages
    ),
    min_size=1,
    max_size=5,
)


@dataclass
class Log:
    """What reached Kafka: events in order, plus the committed checkpoint."""

    events: list[Version]
    checkpoint: Checkpoint | None = None


def apply(source: FakeSource, change: Change) -> None:
    if change.create:
        source.create(1, tie=change.tie)
    else:
        source.mutate(change.index, tie=change.tie)


@dataclass(frozen=True)
class Clock:
    """How a run learns the API's time: the `Date` header, or (None) the producer's own clock
    `skew_us` off the API's (negative: behind; the margin covers up to CLOCK_MARGIN_US ahead)."""

    skew_us: int | None = None


clocks = st.one_of(
    st.just(Clock()),
    st.builds(Clock, st.integers(-5_000_000, CLOCK_MARGIN_US - 1)),
)


def one_run(
    source: FakeSource,
    log: Log,
    limit: int,
    during: list[Change],
    killed_after: int | None,
    max_rejected: int,
    clock: Clock = Clock(),
    slices: int = 1,
) -> list[Version]:
    with_date = clock.skew_us is None
    started_at = source.clock + (clock.skew_us or 0)
    run = SyncRun("contacts", log.checkpoint, started_at=started_at, max_rejected=max_rejected)

    def between_pages(page: int) -> None:
        for change in during:
            if change.after_page == page:
                apply(source, change)

    if run.snapshot and slices > 1 and source.records:
        run, published = sliced_export(
            source,
            limit,
            slices,
            started_at,
            max_rejected,
            between_pages,
            killed_after,
            with_date,
        )
    else:
        published = drive(
            run, source, limit, between_pages, stop_after_pages=killed_after, with_date=with_date
        )
    log.events.extend(published)
    if run.done:  # only a finished run (all events acknowledged) moves the checkpoint
        new = run.checkpoint_after(run_id="r", completed_at="now", published=len(published))
        if new is not None:
            log.checkpoint = new
    return published


def sliced_export(
    source: FakeSource,
    limit: int,
    slices: int,
    started_at: int,
    max_rejected: int,
    between_pages: Callable[[int], None],
    killed_after: int | None,
    with_date: bool,
) -> tuple[SyncRun, list[Version]]:
    """A time-sliced bulk export: the windows' pages taken in turn (as concurrent windows
    interleave), changes landing between pages; the merged run when all windows finished."""
    earliest = min(t for t, _ in source.records.values())
    cap = started_at - CLOCK_MARGIN_US  # one cap for the export, as the service sets it
    runs = [
        SyncRun(
            "contacts",
            None,
            started_at=started_at,
            max_rejected=max_rejected,
            window=w,
            horizon=cap,
        )
        for w in plan_windows(earliest, cap, slices)
    ]
    published: list[Version] = []
    pages = 0
    while not all(r.done for r in runs):
        for window in (r for r in runs if not r.done):
            if killed_after is not None and pages >= killed_after:
                return runs[0], published  # killed: unfinished, nothing committed
            published.extend(take_page(window, source, limit, with_date))
            pages += 1
            between_pages(pages)
    return SyncRun.merged(runs), published


def latest_per_key(events: list[Version]) -> dict[str, tuple[int, int]]:
    return {v.record_id: (v.instant, int(v.record["revision"])) for v in events}


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    initial=st.integers(0, 25),
    initial_ties=st.booleans(),
    limit=st.integers(1, 7),
    plans=run_plans,
    max_rejected=st.sampled_from([1, 3, 10_000]),
    clock=clocks,
    slices=st.sampled_from([1, 3]),
)
def test_after_a_quiet_final_run_kafka_holds_the_source(
    seed: int,
    initial: int,
    initial_ties: bool,
    limit: int,
    plans: list[tuple[list[Change], list[Change], int | None]],
    max_rejected: int,
    clock: Clock,
    slices: int,
) -> None:
    source = FakeSource(random.Random(seed))
    source.create(initial, tie=initial_ties)
    log = Log(events=[])
    for during, before, killed_after in plans:
        for change in before:
            apply(source, change)
        at_start = source.current()
        one_run(source, log, limit, during, killed_after, max_rejected, clock, slices)
        if killed_after is None:
            published = {(v.record_id, v.instant) for v in log.events}
            unchanged = {i: tv for i, tv in at_start.items() if source.records.get(i) == tv}
            # no version present at the start of a run (and not superseded in it) is skipped
            assert {(i, t) for i, (t, _) in unchanged.items()} <= published
    one_run(source, log, limit, [], None, max_rejected, clock, slices)  # quiet final run
    assert latest_per_key(log.events) == source.current()


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    initial=st.integers(0, 25),
    limit=st.integers(1, 7),
    plans=st.lists(
        st.tuples(st.lists(changes, max_size=6), st.lists(changes, max_size=6)),
        min_size=1,
        max_size=4,
    ),
    clock=clocks,
    slices=st.sampled_from([1, 3]),
)
def test_without_failures_each_version_is_published_exactly_once(
    seed: int,
    initial: int,
    limit: int,
    plans: list[tuple[list[Change], list[Change]]],
    clock: Clock,
    slices: int,
) -> None:
    source = FakeSource(random.Random(seed))
    source.create(initial, tie=True)
    log = Log(events=[])
    for before, during in plans:
        for change in before:
            apply(source, change)
        one_run(source, log, limit, during, None, 10_000, clock)
    one_run(
        source, log, limit, [], None, 10_000, clock
    )  # catch up with changes after the last page
    versions = [(v.record_id, v.instant) for v in log.events]
    assert len(versions) == len(set(versions))
    assert latest_per_key(log.events) == source.current()
    assert one_run(source, log, limit, [], None, 10_000, clock, slices) == []  # replay: nothing new


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    initial=st.integers(0, 30),
    limit=st.integers(1, 6),
    batch=st.integers(1, 3),
    plans=st.lists(
        st.tuples(
            st.lists(changes, max_size=6),  # changes during the run
            st.lists(changes, max_size=4),  # changes before the run
            st.one_of(st.none(), st.integers(0, 8)),  # killed after this many pages
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_resumed_runs_publish_every_version_once_in_exactly_once_mode(
    seed: int,
    initial: int,
    limit: int,
    batch: int,
    plans: list[tuple[list[Change], list[Change], int | None]],
) -> None:
    """Exactly-once: a killed run's events after its last progress mark are aborted (never
    visible); the next run resumes from the mark. No version twice, none lost."""
    source = FakeSource(random.Random(seed))
    source.create(initial, tie=True)
    visible: list[Version] = []
    committed: Checkpoint | None = None
    progress: Checkpoint | None = None
    snapshot_of_progress = False

    def run_once(during: list[Change], killed_after: int | None) -> None:
        nonlocal committed, progress, snapshot_of_progress
        run = SyncRun(
            "contacts",
            committed,
            started_at=source.clock,
            resume_from=progress,
            snapshot=snapshot_of_progress if progress is not None else None,
        )
        pending: list[Version] = []  # in the open transaction
        gte = None if run.filter_gte is None else instant_micros(run.filter_gte)
        while not run.done:
            if killed_after is not None and run.stats.pages >= killed_after:
                return  # killed: the open transaction is aborted
            data, more, cursor, served_at = source.page(gte, run.cursor, limit)
            pending.extend(
                run.accept_page(
                    data, has_more=more, next_cursor=cursor, served_at=served_at
                ).accepted
            )
            for change in during:
                if change.after_page == run.stats.pages:
                    apply(source, change)
            if not run.done and run.stats.pages % batch == 0:
                mark = run.progress_mark(run_id="r", completed_at="t", published=0)
                if mark is not None:  # events and mark committed in one transaction
                    visible.extend(pending)
                    pending.clear()
                    progress, snapshot_of_progress = mark, run.snapshot
        final = run.checkpoint_after(run_id="r", completed_at="t", published=0)
        visible.extend(pending)
        if final is not None:
            committed = final
        progress = None

    for during, before, killed_after in plans:
        for change in before:
            apply(source, change)
        run_once(during, killed_after)
    run_once([], None)  # a quiet final run
    run_once([], None)
    versions = [(v.record_id, v.instant) for v in visible]
    assert len(versions) == len(set(versions))
    assert latest_per_key(visible) == source.current()


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    initial=st.integers(1, 40),
    initial_ties=st.booleans(),
    limit=st.integers(1, 6),
    batch=st.integers(1, 4),
    slices=st.integers(2, 4),
    kills=st.lists(st.integers(0, 12), max_size=4),
    during=st.lists(
        st.builds(Change, st.integers(1, 30), st.integers(0, 50), st.booleans(), st.booleans()),
        max_size=10,
    ),
    order_seed=st.integers(0, 2**16),
)
def test_resumed_sliced_exports_publish_every_version_once_in_exactly_once_mode(
    seed: int,
    initial: int,
    initial_ties: bool,
    limit: int,
    batch: int,
    slices: int,
    kills: list[int],
    during: list[Change],
    order_seed: int,
) -> None:
    """Exactly-once with `BACKFILL_SLICES`: the windows' pages interleave in any order, every
    `batch` pages a mark of every window commits with the events before it, a killed export's
    events after its last mark are aborted, and the next attempt resumes each window from the
    mark. No version twice, none lost (after a quiet incremental run)."""
    source = FakeSource(random.Random(seed))
    source.create(initial, tie=initial_ties)
    order = random.Random(order_seed)
    visible: list[Version] = []
    committed: Checkpoint | None = None
    progress: tuple[WindowProgress, ...] = ()
    pages_overall = 0

    def export(killed_after: int | None) -> None:
        nonlocal committed, progress, pages_overall
        if committed is not None:
            return  # the export finished: later runs are incremental
        started_at = source.clock
        if progress:
            windows = restore_windows("contacts", progress, started_at=started_at)
        else:
            earliest = min(t for t, _ in source.records.values())
            cap = started_at - CLOCK_MARGIN_US
            windows = [
                SyncRun("contacts", None, started_at=started_at, window=w, horizon=cap)
                for w in plan_windows(earliest, cap, slices)
            ]
        pending: list[Version] = []  # in the open transaction
        pages = 0
        while not all(w.done for w in windows):
            if killed_after is not None and pages >= killed_after:
                return  # killed: the open transaction is aborted
            window = order.choice([w for w in windows if not w.done])
            pending.extend(take_page(window, source, limit))
            pages += 1
            pages_overall += 1
            for change in during:
                if change.after_page == pages_overall:
                    apply(source, change)
            if pages % batch == 0:  # the events and the mark, one transaction
                progress = window_progress(windows, run_id="r", written_at="t")
                visible.extend(pending)
                pending.clear()
        merged = SyncRun.merged(windows)
        final = merged.checkpoint_after(run_id="r", completed_at="t", published=0)
        visible.extend(pending)
        committed, progress = final, ()

    for killed_after in kills:
        export(killed_after)
    export(None)
    assert committed is not None
    for _ in range(2):  # quiet incremental runs: catch up with the changes during the export
        run = SyncRun("contacts", committed, started_at=source.clock)
        visible.extend(drive(run, source, limit))
        committed = run.checkpoint_after(run_id="r", completed_at="t", published=0) or committed
    versions = [(v.record_id, v.instant) for v in visible]
    assert len(versions) == len(set(versions))
    assert latest_per_key(visible) == source.current()
