"""Property tests of the sync algorithm over random datasets, page sizes and concurrent updates."""

import random
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from producer.sync.checkpoint import Checkpoint
from producer.sync.run import CLOCK_MARGIN_US, SyncRun, Version
from producer.sync.slices import plan_windows
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


# The exactly-once properties with kills and resumes drive the production loop itself:
# tests/unit/test_driver_properties.py.
